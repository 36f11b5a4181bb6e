"""Noise-aware verification (issue 11 items 2, 3 and 9): the limit follows the reference's own
float noise, surgery bugs still fail on every model (large noise floor included), outputs behind
TopK decisions are verified before them, and a model with nothing to remove comes out as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxprune
from onnxprune import cli
from onnxprune.compensation import reader_masks, removed_id_mask
from onnxprune.errors import VerificationFailed
from onnxprune.masking import masked_reference
from onnxprune.surgery import SurgeryContext
from onnxprune.testing import GraphBuilder, random_cnn
from onnxprune.verification import MIN_TOLERANCE, NOISE_MULTIPLE, SCALE_FLOOR

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def run(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize: bool = False, extra: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """Our own onnxruntime session (not onnxprune's): every output and ``extra`` tensors by name."""
    if extra:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in extra)
        model = m
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def noisy_cnn(seed: int = 0, c: int = 32, offset: float = 1e5) -> onnx.ModelProto:
    """A CNN whose last layer sums large terms that nearly cancel: its hidden channels carry a
    constant ``offset`` that the last bias takes away again. Its own float noise (sums
    reordered) is ~1e-3 of its output's scale, like a badly conditioned export; a change of a
    hidden channel reaches the output unattenuated."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", [None, 16, 16, 16])
    h = b.op("Relu", b.conv(x, c))
    h = b.op("Relu", b.conv(h, c))
    h = b.op("Add", b.op("Relu", b.conv(h, c)), b.const(np.float32(offset), "offset"))
    w = b.weights([c, c, 1, 1]) * 4  # 1x1 reader: removed channels' values fold into its bias
    bias = (-offset * w.astype(np.float64).sum(axis=(1, 2, 3))).astype(np.float32)
    b.output(b.conv(h, c, 1, weight=b.const(w, "W"), bias=bias))
    return b.build("noisy")


# -- item 2: the noise floor ------------------------------------------------------------------


def test_limit_is_the_noise_floor_multiple_on_a_badly_conditioned_model() -> None:
    model = noisy_cnn()
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 16, 16, 16)).astype(np.float32)}
    plain, fused = run(model, feeds), run(model, {"x": np.nextafter(feeds["x"], np.float32(np.inf))}, optimize=True)
    out = model.graph.output[0].name
    assert (
        np.abs(plain[out] - fused[out]).max() > 2 * MIN_TOLERANCE * np.abs(plain[out]).max()
    )  # its own noise is large

    # The old fixed 1e-5 x scale refuses a correct lossy prune of it; the noise-aware default proves it.
    with pytest.raises(VerificationFailed, match="more than its limit"):
        onnxprune.prune(model, "l2", ratio=0.25, tolerance=1e-5)
    result = onnxprune.prune(model, "l2", ratio=0.25)
    v = result.report.verification
    assert v.passed and v.noise_multiple == NOISE_MULTIPLE and result.report.channels_removed > 0

    # Independently: the pruned model against the masked original, on the same seeded inputs.
    from onnxprune.compensation import data_free_values
    from onnxprune.planning import PruningPlan

    estimates = data_free_values(
        model, result.analysis, PruningPlan("tmp", result.plan.removed_groups), onnxprune.default_registry(), {}
    )
    masked = masked_reference(
        model, result.analysis, reader_masks(result.analysis, removed_id_mask(result.analysis, result.plan), estimates)
    )
    for o, batch in zip(v.outputs, (1, 2)):
        assert o.batch == batch
        f = {"x": np.random.default_rng(batch - 1).standard_normal((batch, 16, 16, 16)).astype(np.float32)}
        # the noise run: all graph optimisations on, every input one ulp up or down (seeded by the feed's index)
        up = np.random.default_rng(batch - 1).integers(0, 2, f["x"].shape).astype(bool)
        nudged = {"x": np.nextafter(f["x"], np.where(up, np.inf, -np.inf).astype(np.float32))}
        assert np.abs(nudged["x"] - f["x"]).max() < 1e-6
        ref, ref_fused, got = run(masked, f)[out], run(masked, nudged, optimize=True)[out], run(result.model, f)[out]
        assert o.max_abs_diff == pytest.approx(float(np.abs(ref.astype(np.float64) - got).max()), rel=1e-12)
        assert o.noise_floor == pytest.approx(float(np.abs(ref.astype(np.float64) - ref_fused).max()), rel=1e-12)
        assert o.scale == pytest.approx(float(np.abs(ref).max()), rel=1e-12)
        assert o.limit == max(MIN_TOLERANCE * max(o.scale, SCALE_FLOOR), NOISE_MULTIPLE * o.noise_floor)
        assert MIN_TOLERANCE * o.scale < o.max_abs_diff <= o.limit  # it needed the noise floor
        assert o.margin == pytest.approx(o.limit / o.max_abs_diff)


def test_explicit_tolerance_is_an_override_without_a_noise_run() -> None:
    result = onnxprune.prune(noisy_cnn(), "l2", ratio=0.25, tolerance=0.05)
    v = result.report.verification
    assert v.noise_multiple is None and v.noise_runtime is None
    for o in v.outputs:
        assert o.noise_floor is None and o.limit == pytest.approx(0.05 * o.scale)
    d = v.to_dict()
    assert d["mode"] == "explicit tolerance" and d["scale_floor"] is None


def test_limit_never_tighter_than_before() -> None:
    """Where the optimised session computes exactly the same (small random CNNs), the limit is
    the old 1e-5 x scale (or the scale floor for outputs near zero)."""
    result = onnxprune.prune(random_cnn(3), "l2", ratio=0.3)
    for o in result.report.verification.outputs:
        assert o.limit >= MIN_TOLERANCE * o.scale
        assert o.limit >= MIN_TOLERANCE * SCALE_FLOOR


def test_report_table_json_and_markdown_per_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "noisy.onnx"
    onnx.save(noisy_cnn(), model)
    out, report, md = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "r.md"
    assert (
        cli.main(
            [
                "prune",
                str(model),
                "-o",
                str(out),
                "--criterion",
                "l2",
                "--ratio",
                "0.25",
                "--report",
                str(report),
                "--markdown",
                str(md),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    v = json.loads(report.read_text())["verification"]
    assert (
        v["mode"] == "noise-aware" and v["noise_multiple"] == NOISE_MULTIPLE and v["runtime"].startswith("onnxruntime")
    )
    assert "graph optimisations on" in v["noise_runtime"]
    for o in v["outputs"]:
        assert set(o) >= {"name", "batch", "max_abs_diff", "noise_floor", "limit", "margin", "passed"}
        assert o["noise_floor"] > 0 and o["margin"] == pytest.approx(o["limit"] / o["max_abs_diff"])
        row = next(ln for ln in text.splitlines() if ln.strip().startswith(o["name"]) and f" {o['batch']} " in ln)
        assert f"{o['noise_floor']:.3g}" in row and f"{o['limit']:.3g}" in row and f"{o['margin']:.3g}x" in row
    assert "proved by onnxruntime" in text and "noise floor" in text
    mdtext = md.read_text()
    assert "| output | batch | max abs diff | noise floor | limit | margin |" in mdtext
    assert f"{v['outputs'][0]['noise_floor']:.3g}" in mdtext


# -- item 2: injected surgery bugs fail, large noise floor or not ----------------------------

Fault = Callable[[pytest.MonkeyPatch], None]


def wrong_slice_index(mp: pytest.MonkeyPatch) -> None:
    """The first sliced parameter keeps the neighbouring channels (an off-by-one)."""
    real = SurgeryContext.slice_param
    done: list[bool] = []

    def patched(self, node, index, axis, keep):
        keep = np.asarray(keep, bool)
        if not done and not keep.all() and not np.array_equal(np.roll(keep, 1), keep):
            done.append(True)
            keep = np.roll(keep, 1)
        return real(self, node, index, axis, keep)

    mp.setattr(SurgeryContext, "slice_param", patched)


def missed_reader(mp: pytest.MonkeyPatch) -> None:
    """One reader of the removed channels is left as it was (its input channels not sliced)."""
    real = SurgeryContext.slice_param
    done: list[bool] = []

    def patched(self, node, index, axis, keep):
        if not done and axis == 1 and node.op == "Conv" and not np.all(keep):
            done.append(True)
            return None
        return real(self, node, index, axis, keep)

    mp.setattr(SurgeryContext, "slice_param", patched)


def dropped_bias_fold(mp: pytest.MonkeyPatch) -> None:
    """Removed channels' constant (or compensation) value is never folded into the readers."""
    mp.setattr(SurgeryContext, "fold_delta", lambda self, node, index, fn: None)


FAULTS = {
    "wrong slice index": wrong_slice_index,
    "missed reader": missed_reader,
    "dropped bias fold": dropped_bias_fold,
}


def _cases() -> list[tuple[str, Callable[[], onnx.ModelProto | str], str, dict]]:
    cases: list[tuple[str, Callable[[], onnx.ModelProto | str], str, dict]] = [
        ("residual", lambda: str(FIXTURES / "residual.onnx"), "zero", {}),
        ("squeeze_excitation", lambda: str(FIXTURES / "squeeze_excitation.onnx"), "zero", {}),
        ("digits_cnn", lambda: str(FIXTURES / "digits_cnn.onnx"), "l2", {"ratio": 0.25}),
        ("yolo_like", lambda: str(FIXTURES / "yolo_like.onnx"), "l2", {"ratio": 0.25}),
    ]
    for seed in (0, 1, 2):  # fuzzed models with a large noise floor
        cases.append((f"noisy_cnn[{seed}]", lambda seed=seed: noisy_cnn(seed), "l2", {"ratio": 0.25}))
    for seed in (1, 5, 11, 17):  # fuzzed models from every rule family
        cases.append((f"random_cnn[{seed}]", lambda seed=seed: random_cnn(seed), "zero", {}))
        cases.append((f"random_cnn[{seed}] l2", lambda seed=seed: random_cnn(seed), "l2", {"ratio": 0.3}))
    return cases


def _bytes(result: onnxprune.PruneResult) -> bytes:
    return result.model.SerializeToString()


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_injected_surgery_bugs_fail_verification(fault: str) -> None:
    effective = []
    for name, make, criterion, kw in _cases():
        correct = onnxprune.prune(make(), criterion, verify=False, **kw)
        with pytest.MonkeyPatch.context() as mp:
            FAULTS[fault](mp)
            try:
                broken = onnxprune.prune(make(), criterion, verify=False, **kw)
            except Exception:
                broken = None
        if broken is not None and _bytes(broken) == _bytes(correct):
            continue  # the fault had nothing to act on in this model
        effective.append(name)
        with pytest.MonkeyPatch.context() as mp:
            FAULTS[fault](mp)  # installed afresh: the same fault in the same place
            with pytest.raises(VerificationFailed):
                onnxprune.prune(make(), criterion, **kw)
    # Every fault acted on a large-noise model and on most of the others.
    assert any(n.startswith("noisy_cnn") for n in effective), effective
    assert len(effective) >= 6, effective


# -- item 9: nothing removable ---------------------------------------------------------------


def _declared_io_model() -> onnx.ModelProto:
    """A model whose outputs carry a symbolic batch dim and metadata (as torch's dynamo writes)."""
    b = GraphBuilder(seed=3)
    x = b.input("x", [None, 3, 8, 8])
    y = b.op("Relu", b.conv(x, 4))
    z = b.op("Softmax", b.conv(y, 6), axis=1)
    b.output(z)
    m = b.build()
    out = m.graph.output[0]
    del out.type.tensor_type.shape.dim[:]
    for d in ("batch", 6, 8, 8):
        dim = out.type.tensor_type.shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d
    out.metadata_props.add(key="pkg.torch.export.graph_signature.OutputSpec.kind", value="USER_OUTPUT")
    out.doc_string = "class probabilities"
    onnx.checker.check_model(m, full_check=True)
    return m


def test_nothing_removable_comes_out_as_it_was() -> None:
    model = _declared_io_model()
    result = onnxprune.prune(model, "zero")
    assert result.report.channels_removed == 0 and result.report.verification.passed
    pruned = result.model
    onnx.checker.check_model(pruned, full_check=True)
    assert [o.SerializeToString() for o in pruned.graph.output] == [o.SerializeToString() for o in model.graph.output]
    assert [i.SerializeToString() for i in pruned.graph.input] == [i.SerializeToString() for i in model.graph.input]
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    (a,), (b,) = run(model, feeds).values(), run(pruned, feeds).values()
    assert np.array_equal(a, b)


def test_output_declarations_kept_when_channels_go() -> None:
    model = _declared_io_model()
    result = onnxprune.prune(model, "l2", ratio=0.5)
    assert result.report.channels_removed > 0
    onnx.checker.check_model(result.model, full_check=True)
    assert [o.SerializeToString() for o in result.model.graph.output] == [
        o.SerializeToString() for o in model.graph.output
    ]
    assert [i.SerializeToString() for i in result.model.graph.input] == [
        i.SerializeToString() for i in model.graph.input
    ]


def test_nothing_removable_with_a_budget_and_from_file(tmp_path: Path) -> None:
    """A lossy criterion with nothing it may take (every channel reaches the output), via a file."""
    b = GraphBuilder(seed=4)
    x = b.input("x", [1, 3, 6, 6])
    b.output(b.conv(x, 4))
    model = b.build()
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, src)
    result = onnxprune.prune(str(src), "l2", ratio=0.5, output=str(out))
    assert result.report.channels_removed == 0
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    assert written.graph.SerializeToString() == model.graph.SerializeToString()


# -- an original that computes NaN verified 'exact' with no word that nothing was proved there --


def _sqrt_model(shift_channel: int | None = None, shift: float = -1e9, scale_channel: int | None = None):
    """Conv -> |.| + shift -> Sqrt (4 channels, 8x8): a shift of -1e9 makes one channel NaN;
    ``scale_channel`` doubles one channel (a surgery that changed a finite value)."""
    import numpy as np

    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17, seed=0)
    x = b.input("input", (1, 3, 8, 8))
    b.channels[x] = 3
    add = np.zeros((1, 4, 1, 1), np.float32)
    if shift_channel is not None:
        add[0, shift_channel] = shift
    mul = np.ones((1, 4, 1, 1), np.float32)
    if scale_channel is not None:
        mul[0, scale_channel] = 2.0
    y = b.op("Sqrt", b.op("Add", b.op("Abs", b.conv(x, 4)), b.const(add)))
    b.output(b.op("Mul", y, b.const(mul)))
    return b.build()


def test_an_original_that_computes_nan_is_reported_as_unproved_where_it_does() -> None:
    from onnxprune.cli_text import format_report, verification_lines
    from onnxprune.render import to_markdown

    nan_original = _sqrt_model(shift_channel=2)
    same = onnxprune.verify(nan_original, _sqrt_model(shift_channel=2))
    out = same.outputs[0]
    assert same.passed and out.max_abs_diff == 0.0  # the same NaN at the same places agrees
    assert (out.reference_non_finite, out.values) == (64, 256)  # one channel of 4, 8x8, batch 1
    assert same.non_finite_outputs == (out,)
    d = same.to_dict()
    assert (d["outputs"][0]["reference_non_finite"], d["outputs"][0]["values"]) == (64, 256)
    line = (
        f"  note: the original computes NaN or inf in 64 of 256 values of output {out.name!r} (batch 1): "
        "there verification only proves that the pruned model computes the same non-finite value at the same place"
    )
    assert line in verification_lines(d)
    report = onnxprune.prune(nan_original).report.to_dict()  # the zero criterion: verified against the original
    assert line in format_report(report).splitlines()
    assert (
        f"Note: the original computes NaN or inf in 64 of 256 values of output `{out.name}` (batch 1): "
        "there verification only proves that the pruned model computes the same non-finite value at the same place."
    ) in to_markdown(report).splitlines()
    # a finite original says nothing of the kind
    clean = onnxprune.verify(_sqrt_model(), _sqrt_model())
    assert clean.non_finite_outputs == () and clean.outputs[0].reference_non_finite == 0
    assert not any("non-finite" in line for line in verification_lines(clean.to_dict()))
    # the tolerance stays tight around the NaN: a finite value moved elsewhere still fails,
    # a NaN where the original is finite fails, a finite value where it is NaN fails
    assert not onnxprune.verify(nan_original, _sqrt_model(shift_channel=2, scale_channel=0)).passed
    assert not onnxprune.verify(nan_original, _sqrt_model(shift_channel=1)).passed
    assert not onnxprune.verify(nan_original, _sqrt_model()).passed


# -- verify() of two models of different interfaces showed onnxruntime's raw message ----------


def _renamed(path: Path, tmp_path: Path, *, output: str | None = None, input_shape: list | None = None) -> str:
    import onnx

    m = onnx.load(path)
    if output is not None:
        old = m.graph.output[0].name
        for node in m.graph.node:
            node.output[:] = [output if o == old else o for o in node.output]
        m.graph.output[0].name = output
    if input_shape is not None:
        dims = m.graph.input[0].type.tensor_type.shape.dim
        for d, v in zip(dims, input_shape):
            d.Clear()
            if isinstance(v, int):
                d.dim_value = v
            else:
                d.dim_param = v
    out = str(tmp_path / f"changed_{output or 'shape'}.onnx")
    onnx.save(m, out)
    return out


def test_verify_of_models_with_other_outputs_or_inputs_names_both_files(tmp_path) -> None:
    from onnxprune.errors import VerificationFailed

    shuffle = str(FIXTURES / "shuffle.onnx")
    other = _renamed(FIXTURES / "shuffle.onnx", tmp_path, output="scores")
    with pytest.raises(VerificationFailed) as info:
        onnxprune.verify(shuffle, other)
    assert str(info.value) == (
        f"{other}: no output 'Gemm_115', which {shuffle} computes (its outputs: 'scores'): "
        "verify compares two models with the same inputs and outputs"
    )
    digits = str(FIXTURES / "digits_cnn.onnx")
    with pytest.raises(VerificationFailed) as info:
        onnxprune.verify(shuffle, digits)
    assert str(info.value) == (
        f"{digits}: input 'input' is float [N, 1, 8, 8], in {shuffle} float [1, 3, 16, 16]: "
        "verify compares two models with the same inputs and outputs"
    )
    # a dynamic dimension against a static one is no mismatch: the feeds fit both
    dynamic = _renamed(FIXTURES / "shuffle.onnx", tmp_path, input_shape=["N", 3, 16, 16])
    assert onnxprune.verify(shuffle, dynamic).passed
    # in memory, the models are named as what they are
    import onnx

    with pytest.raises(
        VerificationFailed, match=r"^the pruned model: no output 'Gemm_115', which the original computes"
    ):
        onnxprune.verify(onnx.load(shuffle), onnx.load(other))
