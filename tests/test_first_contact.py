"""Issue 14: the defects a new user hits in the first hour. CLI tests run the command line as a
subprocess where the exit code and the single error line matter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import one_line_error, run_cli, small_cnn
from PIL import Image

import onnxprune
from onnxprune.testing import GraphBuilder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DIGITS = FIXTURES / "digits_cnn.onnx"


# -- 2: an image folder as --calibration -----------------------------------------------------


def test_prune_takes_a_folder_of_calibration_images(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(small_cnn(), model)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    p = run_cli(
        "prune",
        model,
        "-o",
        out,
        "--criterion",
        "mean-activation",
        "--ratio",
        "0.25",
        "--calibration",
        images,
        "--preprocess",
        "imagenet",
        "--report",
        report,
    )
    assert p.returncode == 0, p.stderr
    data = json.loads(report.read_text())
    assert data["channels_removed"] > 0 and data["compensation"] == "calibration"
    assert "evaluation samples" in data["evaluation"]


# -- 3: one rule for the default criterion ---------------------------------------------------


@pytest.mark.parametrize("budget", [["--ratio", "0.25"], ["--macs-target", "0.8"]])
def test_a_budget_without_criterion_means_l2(tmp_path: Path, budget: list[str]) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(small_cnn(), model)
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    p = run_cli("prune", model, "-o", out, *budget, "--report", report)
    assert p.returncode == 0, p.stderr
    data = json.loads(report.read_text())
    assert data["criterion"] == "l2" and data["channels_removed"] > 0
    assert "budget" in data["criterion_reason"] and budget[0] in data["criterion_reason"]
    assert "criterion: l2 (default: a budget" in p.stdout


def test_no_budget_means_zero_and_says_why(tmp_path: Path) -> None:
    r = onnxprune.prune(FIXTURES / "residual.onnx")
    assert r.report.criterion == "zero" and "no budget" in r.report.criterion_reason
    given = onnxprune.prune(FIXTURES / "residual.onnx", "zero")
    assert given.report.criterion_reason == "given"


def test_budget_rule_is_stated_in_help() -> None:
    p = run_cli("prune", "--help")
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    assert "default: contribution for a --min-fidelity / --max-drop / --validate search with --calibration" in text
    assert "l2 with any other budget" in text and "else zero" in text


def test_zero_criterion_with_a_budget_is_a_usage_error(tmp_path: Path) -> None:
    p = run_cli("prune", FIXTURES / "residual.onnx", "-o", tmp_path / "o.onnx", "--criterion", "zero", "--ratio", "0.2")
    assert "takes no budget (--ratio)" in one_line_error(p)
    assert not (tmp_path / "o.onnx").exists()


def test_config_file_sparsity_is_a_budget() -> None:
    cfg = onnxprune.PruneConfig(layer_rules=(onnxprune.LayerRule(op_types=("Conv",), sparsity=0.25),))
    assert cfg.criterion == "l2" and "--config sparsity" in cfg.criterion_reason
    assert onnxprune.PruneConfig(exclude=("x",)).criterion == "zero"  # exclusions alone are no budget


def test_min_fidelity_without_criterion_is_contribution_by_the_data_rule(tmp_path: Path) -> None:
    # a search judged on calibration data ranks by contribution (tests/test_default_criterion.py)
    cfg = onnxprune.PruneConfig(min_fidelity=0.9, calibration="c.npz")
    assert cfg.criterion == "contribution" and "--min-fidelity" in cfg.criterion_reason
    # with a refit the budget rule's l2 stays
    assert onnxprune.PruneConfig(min_fidelity=0.9, calibration="c.npz", reconstruct=True).criterion == "l2"
    # replacing options re-applies the rule to a default criterion, keeps a given one
    assert cfg.with_options(min_fidelity=None, calibration=None).criterion == "zero"
    assert onnxprune.PruneConfig(criterion="fpgm", ratio=0.1).with_options(ratio=0.2).criterion == "fpgm"


# -- 4: a bad --exclude regex is a usage error -------------------------------------------------


def test_invalid_exclude_regex_is_a_usage_error(tmp_path: Path) -> None:
    p = run_cli(
        "prune",
        FIXTURES / "residual.onnx",
        "-o",
        tmp_path / "o.onnx",
        "--criterion",
        "l2",
        "--ratio",
        "0.2",
        "--exclude",
        "(",
    )
    line = one_line_error(p)
    assert "--exclude '('" in line and "not a valid regular expression" in line
    with pytest.raises(onnxprune.UsageError, match="op_names"):
        onnxprune.LayerRule(op_names=("[",), exclude=True)


# -- 10: a criterion with nothing to score says so ---------------------------------------------


def test_bn_gamma_without_batchnorm_says_so(tmp_path: Path) -> None:
    b = GraphBuilder(opset=17, seed=1)
    x = b.input("input", [None, 3, 8, 8])
    b.channels[x] = 3
    b.output(b.conv(b.op("Relu", b.conv(x, 6)), 2))
    model = tmp_path / "m.onnx"
    onnx.save(b.build(), model)
    p = run_cli("prune", model, "-o", tmp_path / "o.onnx", "--criterion", "bn-gamma", "--ratio", "0.5")
    line = one_line_error(p)
    assert "nothing to score" in line and "try --criterion l2" in line
    assert not (tmp_path / "o.onnx").exists()


# -- 11: fidelity on random noise is labelled ----------------------------------------------------


def test_fidelity_on_random_inputs_is_labelled(tmp_path: Path) -> None:
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    p = run_cli("prune", DIGITS, "-o", out, "--criterion", "l2", "--ratio", "0.2", "--report", report)
    assert p.returncode == 0, p.stderr
    data = json.loads(report.read_text())
    assert data["fidelity_on_random_inputs"] is True
    assert any("random inputs, not real data" in n for n in data["notes"])
    assert "ON RANDOM NOISE" in p.stdout
    with_data = onnxprune.prune(DIGITS, "l2", ratio=0.2, verification_inputs=str(FIXTURES / "digits_calibration.npz"))
    assert with_data.report.fidelity_on_random_inputs is False
    assert not any("random inputs" in n for n in with_data.report.notes)


# -- 7: calibration / verification arrays that do not fit the model ----------------------------


@pytest.mark.parametrize(
    "array, expected",
    [
        (
            np.zeros((4, 3, 8), np.float32),
            "input 'input' has shape [1, 3, 8], the model takes [?, 3, 8, 8] (array 'input' of {npz} has shape (4, 3, 8)",
        ),
        (
            np.zeros((4, 3, 8, 9), np.float32),
            "input 'input' has shape [1, 3, 8, 9], the model takes [?, 3, 8, 8] (array 'input' of {npz} has shape (4, 3, 8, 9)",
        ),
        (np.zeros((4, 8, 8, 3), np.float32), "NHWC data for an NCHW input"),
        (np.zeros((4, 3, 8, 8), np.int64), "input 'input' is int64, the model takes float (array 'input' of {npz}"),
    ],
)
@pytest.mark.parametrize("option", ["--calibration", "--inputs", "sensitivity"])
def test_bad_arrays_name_the_array_and_the_shapes(
    tmp_path: Path, array: np.ndarray, expected: str, option: str
) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(small_cnn(), model)
    npz = tmp_path / "c.npz"
    np.savez(npz, input=array)
    out = tmp_path / "o.onnx"
    if option == "sensitivity":
        p = run_cli("sensitivity", model, "--calibration", npz)
    else:
        p = run_cli("prune", model, "-o", out, "--criterion", "l2", "--ratio", "0.25", option, npz)
    line = one_line_error(p)
    assert line.startswith(f"onnxprune: error: {model}: the inputs do not fit the model: ")
    assert expected.format(npz=npz) in line, line
    assert not out.exists()


def test_float64_arrays_are_cast_to_the_input_type(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(small_cnn(), model)
    npz = tmp_path / "c.npz"
    np.savez(npz, input=np.random.default_rng(0).standard_normal((8, 3, 8, 8)))  # numpy's float64
    out = tmp_path / "o.onnx"
    p = run_cli(
        "prune", model, "-o", out, "--criterion", "l2", "--ratio", "0.25", "--calibration", npz, "--inputs", npz
    )
    assert p.returncode == 0, p.stderr
    assert "verification: PASSED" in p.stdout


# -- 9: kept-channel reasons say what is still missing ------------------------------------------


def _reshape_by_runtime_shape(height: int | None) -> onnx.ModelProto:
    """Conv -> Reshape whose target shape is a graph input (known only at run time)."""
    b = GraphBuilder(opset=17, seed=2)
    x = b.input("input", [None, 3, height, 8])
    target = b.input("target", [4], dtype=onnx.TensorProto.INT64)
    b.channels[x] = 3
    y = b.op("Reshape", b.conv(x, 4), target, channels=4)
    b.output(b.conv(b.op("Relu", y), 2))  # its MACs are unknown until run time
    return b.build()


def _pins(analysis: onnxprune.ChannelAnalysis) -> list[str]:
    return [r for g in analysis.groups for r in g.pinned_by if "static shapes" in r]


def test_missing_shape_reason_after_the_shape_was_given() -> None:
    given = _pins(onnxprune.analyze(_reshape_by_runtime_shape(None), input_shapes={"input": (1, 3, 8, 8)}))
    assert given and all("give --input-shape" not in r and "computed at run time" in r for r in given), given
    missing = _pins(onnxprune.analyze(_reshape_by_runtime_shape(None)))
    assert missing and all("give --input-shape for 'input'" in r for r in missing), missing


def test_macs_note_after_the_shape_was_given() -> None:
    r = onnxprune.prune(
        _reshape_by_runtime_shape(None), input_shapes={"input": (1, 3, 8, 8), "target": (4,)}, verify=False
    )
    notes = [n for n in r.report.notes if "MACs" in n]
    assert notes and all("give --input-shape" not in n.cli_text and "computed at run time" in n for n in notes), notes
    r = onnxprune.prune(_reshape_by_runtime_shape(None), verify=False)
    assert any("give --input-shape for 'input'" in n.cli_text for n in r.report.notes), r.report.notes
    assert any("give input_shapes for 'input'" in n for n in r.report.notes), r.report.notes  # the API's words


# -- 8: all outputs or none; every destination checked first; the user's paths in errors --------


def _unwritable(tmp_path: Path) -> Path:
    """A folder that exists but cannot be written (root writes anywhere chmod allows: /sys)."""
    import os

    if os.geteuid() == 0:
        if not Path("/sys").is_dir():
            pytest.skip("needs /sys to have an unwritable folder as root")
        return Path("/sys")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("flag", ["--report", "--markdown", "--ir", "--save-plan"])
def test_unwritable_destination_leaves_nothing(tmp_path: Path, flag: str) -> None:
    out = tmp_path / "o.onnx"
    target = _unwritable(tmp_path) / ("r.xml" if flag == "--ir" else "r.out")
    line = one_line_error(run_cli("prune", FIXTURES / "residual.onnx", "-o", out, flag, target))
    assert str(target) in line and "cannot write" in line
    assert not out.exists() and not list(tmp_path.glob(".onnxprune*"))


def test_convert_into_unwritable_folder_is_a_usage_error(tmp_path: Path) -> None:
    target = _unwritable(tmp_path) / "m.xml"
    line = one_line_error(run_cli("convert", FIXTURES / "residual.onnx", "-o", target))
    assert str(target) in line and "cannot write" in line


def test_output_naming_a_folder_names_the_users_path(tmp_path: Path) -> None:
    folder = tmp_path / "existing"
    folder.mkdir()
    line = one_line_error(run_cli("prune", FIXTURES / "residual.onnx", "-o", folder))
    assert f"{folder}: output is a folder" in line and ".onnxprune-" not in line
    line = one_line_error(run_cli("prune", FIXTURES / "residual.onnx", "-o", tmp_path / "o.onnx", "--report", folder))
    assert f"{folder}: --report is a folder" in line and not (tmp_path / "o.onnx").exists()


def test_outputs_commit_all_or_none(tmp_path: Path) -> None:
    from onnxprune.saving import Outputs

    first, blocked = tmp_path / "a.json", tmp_path / "b.json"
    blocked.mkdir()  # a file cannot replace a folder: the second move fails
    with Outputs() as outputs:
        outputs.add_text(str(first), "{}")
        outputs.add_text(str(blocked), "{}")
        with pytest.raises(onnxprune.WriteError, match=f"^{blocked}: .*nothing written"):
            outputs.commit()
    assert not first.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]


def test_prune_leaves_the_model_staged_until_the_caller_commits(tmp_path: Path) -> None:
    """The CLI stages the model with its other files: a failure before the commit (a late
    OpenVINO step, a report) leaves neither the model nor its staging folder."""
    from onnxprune import saving

    out = tmp_path / "o.onnx"
    with saving.Outputs() as outputs:
        result = onnxprune.prune(FIXTURES / "residual.onnx", output=out, outputs=outputs)
        staged = Path(outputs.model_path(str(out)))
        assert staged.exists() and not out.exists()  # verified, staged, not yet in place
        assert result.report.verification.passed
    assert not out.exists() and not staged.exists() and not list(tmp_path.glob(".onnxprune*"))
    with saving.Outputs() as outputs:
        onnxprune.prune(FIXTURES / "residual.onnx", output=out, outputs=outputs)
        outputs.commit()
    assert out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["o.onnx"]


# -- 1: --macs-target with --round-to reaches the target, or says exactly why not ----------------


def _conv_chain(widths: tuple[int, ...] = (24, 24, 24, 24), seed: int = 4) -> onnx.ModelProto:
    b = GraphBuilder(opset=17, seed=seed)
    y = b.input("input", [1, 3, 16, 16])
    b.channels[y] = 3
    for w in widths:
        y = b.op("Relu", b.conv(y, w))
    b.output(b.conv(y, 2, k=1, pads=0))
    return b.build()


@pytest.mark.parametrize("target", [0.5, 0.35])
def test_macs_target_holds_with_round_to(target: float) -> None:
    r = onnxprune.prune(_conv_chain(), "l2", macs_target=target, round_to=8, verify=False)
    assert r.report.macs_after <= target * r.report.macs_before
    kept = {c.node: c.channels_after for c in r.report.layers}
    assert kept and all(k % 8 == 0 for k in kept.values()), kept
    assert not any("not reached" in n for n in r.report.notes)


def test_macs_target_out_of_reach_says_why(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(_conv_chain((24, 24, 24, 24)), model)
    p = run_cli(
        "prune",
        model,
        "-o",
        tmp_path / "o.onnx",
        "--macs-target",
        "0.05",
        "--round-to",
        "16",
        "--report",
        tmp_path / "r.json",
    )
    assert p.returncode == 0, p.stderr
    notes = [n for n in json.loads((tmp_path / "r.json").read_text())["notes"] if "not reached" in n]
    assert len(notes) == 1 and "MACs target 0.05 not reached" in notes[0]
    assert "with --round-to 16 every layer keeps a multiple of 16 channels" in notes[0]
    assert "note: MACs target 0.05 not reached" in p.stdout


# -- 14: why is this layer not pruned? ---------------------------------------------------------


def _explained_model(tmp_path: Path) -> Path:
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("input", [None, 3, 8, 8])
    b.channels[x] = 3
    y = b.op("Relu", b.conv(x, 8, zero=[1, 2]))  # two provably-zero channels
    b.output(b.conv(y, 6))  # its channels reach the graph output: pinned
    path = tmp_path / "m.onnx"
    onnx.save(b.build(), path)
    return path


def test_explain_per_layer(tmp_path: Path) -> None:
    model, out = _explained_model(tmp_path), tmp_path / "e.json"
    p = run_cli("explain", model, "--json", out)
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    assert "\n" not in text and len(text) < 1000  # compact: one line, no per-channel groups
    layers = {x["node"]: x for x in json.loads(text)["layers"]}
    first, last = layers["Conv_node_4"], layers["Conv_node_10"]
    assert first["channels"] == 8 and first["removable"] == {"zero": 2, "lossy": 7}
    assert first["kept"]["zero"] == {"not constant where Conv_node_10 reads it": 6}
    assert first["kept"]["lossy"] == {"last channel of tensor 'Conv_3': at least one must stay": 1}
    assert last["channels"] == 6 and last["removable"] == {"zero": 0, "lossy": 0}
    assert last["kept"]["lossy"] == {"reaches graph output 'Conv_9'": 6}
    assert "zero 2, lossy 7" in p.stdout


def test_explain_one_node_and_analyze_layers(tmp_path: Path) -> None:
    model = _explained_model(tmp_path)
    p = run_cli("explain", model, "--node", "Conv_node_10")
    assert p.returncode == 0, p.stderr
    assert (
        p.stdout.startswith("Conv_node_10 (Conv): 6 output channels")
        and "6 ch  reaches graph output 'Conv_9'" in p.stdout
    )
    assert "Conv_node_4" not in p.stdout
    line = one_line_error(run_cli("explain", model, "--node", "Conv_node_5"))
    assert "no weight-bearing layer named 'Conv_node_5'; did you mean 'Conv_node_4'" in line
    layers = run_cli("analyze", model, "--layers")
    assert layers.returncode == 0 and "zero 2, lossy 7" in layers.stdout


def test_special_file_destination_is_refused(tmp_path: Path) -> None:
    """A report to a device (or a fifo) is refused, never replaced by a regular file."""
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    line = one_line_error(run_cli("prune", FIXTURES / "residual.onnx", "-o", tmp_path / "o.onnx", "--report", fifo))
    assert f"{fifo}: --report is not a regular file" in line
    assert fifo.is_fifo() and not (tmp_path / "o.onnx").exists()


# -- found by hand on the corpus: a sequence-first output ([T, N, classes], a CRNN's) broke the
# fidelity figures (exit 3) when verification fed batch 1 and 2 ------------------------------------


def test_sequence_first_output_fidelity(tmp_path: Path) -> None:
    b = GraphBuilder(opset=17, seed=6)
    x = b.input("input", [None, 3, 1, 6])
    b.channels[x] = 3
    y = b.conv(b.op("Relu", b.conv(x, 8, k=1, pads=0)), 5, k=1, pads=0)
    y = b.op("Squeeze", y, b.const(np.array([2], np.int64), "axes"), channels=5)
    b.output(b.op("Transpose", y, perm=[2, 0, 1]))  # [T=6, N, 5 classes]
    model = tmp_path / "seq.onnx"
    onnx.save(b.build(), model)
    p = run_cli("prune", model, "-o", tmp_path / "o.onnx", "--ratio", "0.25", "--report", tmp_path / "r.json")
    assert p.returncode == 0, p.stderr
    fid = json.loads((tmp_path / "r.json").read_text())["fidelity"][0]
    assert 0.0 <= fid["top1_agreement"] <= 1.0 and -1.0 <= fid["cosine"] <= 1.0
