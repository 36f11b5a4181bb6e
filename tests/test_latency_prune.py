"""prune(latency_target=...) end to end with the deterministic StepTimer: the latency table,
the planner and the A/B confirmation all time with it, so nothing is timed for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from latency_helpers import three_unit_chain

import onnxprune
from onnxprune.testing import StepTimer


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXPRUNE_CACHE_DIR", str(tmp_path / "cache"))


COSINE = {"fidelity_metrics": {"*": "cosine"}}  # top-1 of 4 random classes barely moves


def _timer() -> StepTimer:
    # 0.1 ms + 10 us per started block of 16 channels of every conv's inputs and outputs: the
    # model has 14 blocks (0.24 ms); a unit kept at 16 saves 2 blocks (its conv's outputs, its
    # reader's inputs)
    return StepTimer(step=16, base=1e-4, per_block=1e-5)


def test_latency_target_keeps_multiples_of_the_step_and_is_confirmed(tmp_path: Path) -> None:
    timer = _timer()
    model = tmp_path / "chain.onnx"
    onnx.save(three_unit_chain(), model)
    result = onnxprune.prune(str(model), latency_target=0.85, timer=timer, output=tmp_path / "out.onnx")
    report = result.report
    lat = report.latency.to_dict()
    assert report.criterion == "l2" and report.verification.passed
    # two units at 16 channels: 4 blocks of 24 saved, 0.2 / 0.24 ms
    assert lat["measured_ratio"] == pytest.approx(0.20 / 0.24)
    assert lat["predicted_ratio"] == pytest.approx(lat["measured_ratio"])  # the step timer is additive
    assert lat["met"] and len(lat["attempts"]) == 1
    attempt = lat["attempts"][0]  # the A/B run's own times beside its ratio
    assert (attempt["original_ms"], attempt["candidate_ms"]) == (pytest.approx(0.24), pytest.approx(0.20))
    assert lat["measured_p10"] == lat["measured_p90"] == pytest.approx(lat["measured_ratio"])
    assert lat["precision"] == "f32" and lat["settings"]["backend"] == "openvino"
    assert sorted(c.channels_after for c in report.layers) == [16, 16]
    assert all(u["step"] == 16 and u["kept"] in (16, 32) for u in lat["units"])
    assert sum(u["kept"] == 16 for u in lat["units"]) == 2
    kept_reasons = {r for g in report.kept_groups for r in g.reasons}
    assert any("a multiple of 16, the step where its measured latency drops" in r for r in kept_reasons)
    d = report.to_dict()
    assert d["latency"] == lat and d["budget"]["latency_target"] == 0.85
    json.dumps(d)  # the report stays JSON
    # the original is never modified, and the cache makes a second run time no unit again
    loads = timer.loads
    again = onnxprune.prune(str(model), latency_target=0.85, timer=timer)
    assert again.plan.removed_groups == result.plan.removed_groups
    assert timer.loads - loads == 2  # only the A/B pair


def test_unreachable_target_is_written_with_a_note(tmp_path: Path) -> None:
    result = onnxprune.prune(three_unit_chain(), latency_target=0.5, timer=_timer())
    lat = result.report.latency.to_dict()
    assert not lat["met"]
    assert lat["measured_ratio"] == pytest.approx(0.18 / 0.24)  # every unit at 16: the best the step allows
    assert any(n.startswith("latency target 0.5 not reached: measured 0.750x") for n in result.report.notes)


def test_a_target_taking_most_of_the_removable_latency_says_so() -> None:
    # the step timer's floor: every unit at 16 channels, 0.18 of 0.24 ms (0.75x; additive, so
    # the A/B measurement confirms the table); 0.8x takes 80% of the 25% pruning can save
    near = onnxprune.prune(three_unit_chain(), latency_target=0.8, timer=_timer()).report
    assert near.latency.floor_ratio == pytest.approx(0.75)
    said = [n for n in near.notes if n.startswith("about 25% of this model's latency at most goes with its prunable")]
    assert len(said) == 1 and "floor 0.750x" in said[0] and "target 0.8x takes 80% of that" in said[0]
    assert "add --min-fidelity" in said[0].cli_text and "add min_fidelity F" in said[0]  # CLI / API words
    far = onnxprune.prune(three_unit_chain(), latency_target=0.9, timer=_timer()).report  # 40% of it: no note
    assert far.latency.floor_ratio == pytest.approx(0.75)
    assert not [n for n in far.notes if "prunable channels" in n]


def test_overhead_note_wording() -> None:
    from onnxprune.stages.latency import overhead_note

    assert overhead_note(0.7, 0.2, False) == ()  # 30% of 80%
    assert overhead_note(0.7, 0.35, False) == ()  # 30% of 65%: less than half
    below = overhead_note(0.7, 0.77, False)
    assert len(below) == 1 and below[0].endswith("the target 0.7x is below it")
    (constrained,) = overhead_note(0.85, 0.77, True)
    assert "takes 65% of that" in constrained and "--min-fidelity" not in constrained


def test_corrected_floor_scales_the_tables_savings_as_measured() -> None:
    from onnxprune.stages.latency import corrected_floor

    # predicted 0.79, measured 0.84: the plan really saved 0.16 of the 0.21 predicted
    assert corrected_floor(0.675, 0.79, 0.84) == pytest.approx(1 - 0.325 * 0.16 / 0.21)
    assert corrected_floor(0.5, 0.9, 0.6) == pytest.approx(0.0)  # at most 2x: 1 - 0.5 x 2
    assert corrected_floor(0.5, 0.8, 0.99) == pytest.approx(0.75)  # at least 0.5x
    assert corrected_floor(0.5, 1.0, 0.9) == 0.5  # nothing predicted: nothing to scale


def test_fidelity_floor_wins_over_the_latency_target(tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    free = onnxprune.prune(
        three_unit_chain(), latency_target=0.85, timer=_timer(), calibration=str(calib), min_fidelity=1e-6, **COSINE
    )
    assert free.report.latency.met and free.report.sensitivity is not None  # importance was measured
    assert not free.report.latency.limited
    reached = free.report.latency.constraint_value  # on the calibration samples, all moves together
    assert reached < 1.0
    floor = (reached + 1.0) / 2  # the latency plan's answers are not good enough
    bound = onnxprune.prune(
        three_unit_chain(), latency_target=0.85, timer=_timer(), calibration=str(calib), min_fidelity=floor, **COSINE
    )
    lat = bound.report.latency.to_dict()
    assert lat["limited_by_constraint"] and lat["constraint_value"] >= floor
    assert lat["constraint"] == f"fidelity >= {floor:g}"
    assert lat["measured_ratio"] > free.report.latency.measured_ratio
    assert any("reached before the latency target" in n for n in bound.report.notes)


def test_cli_latency_target_end_to_end(tmp_path: Path) -> None:
    model = tmp_path / "chain.onnx"
    onnx.save(three_unit_chain(), model)
    out, rep, md, png = tmp_path / "out.onnx", tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    env = {"ONNXPRUNE_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run(
        [sys.executable, "-m", "onnxprune", "prune", str(model), "-o", str(out), "--latency-target", "0.96"]
        + ["--timer", "onnxprune.testing:step_timer", "--report", str(rep), "--markdown", str(md), "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert p.returncode == 0, p.stderr
    assert "latency target 0.96x (openvino CPU, batch 1, threads auto, hint latency, f32 inference): met" in p.stdout
    assert "measured " in p.stdout and "A/B 1: aim 0.960" in p.stdout
    # each attempt with the A/B run's own times: its original, not the table's baseline
    assert re.search(
        r"A/B 1: aim 0\.960 -> predicted [0-9.]+, measured [0-9.]+ \(p10-p90 [0-9.]+-[0-9.]+; 1\.[0-9]{3} -> 1\.[0-9]{3} ms\)",
        p.stdout,
    )
    assert "ms (latency table)" in p.stdout
    lat = json.loads(rep.read_text())["latency"]
    assert set(lat) >= {"measured_ratio", "measured_p10", "measured_p90", "predicted_ratio", "units", "attempts"}
    assert lat["measured_ratio"] <= 0.96
    text = md.read_text()
    assert "## Latency target" in text and "| measured (median of interleaved A/B runs) |" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--latency-target", "0.7", "--ratio", "0.3"],
            "--latency-target is a budget of its own: it cannot go with --ratio",
        ),
        (["--batch", "2"], "--batch: how the latency is measured, only with --latency-target F"),
        (["--latency-target", "0.7", "--quantize", "int8", "--calibration", "C"], "cannot go with --quantize"),
        (["--latency-target", "2"], r"--latency-target 2: the latency kept.*a fraction in \(0, 1\)$"),  # no guess
    ],
)
def test_cli_usage_errors_are_one_line(extra: list[str], message: str, tmp_path: Path) -> None:
    model = tmp_path / "chain.onnx"
    onnx.save(three_unit_chain(), model)
    np.savez(tmp_path / "C.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    extra = [str(tmp_path / "C.npz") if a == "C" else a for a in extra]
    p = subprocess.run(
        [sys.executable, "-m", "onnxprune", "prune", str(model), "-o", str(tmp_path / "o.onnx"), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1
    assert re.search(message, p.stderr), p.stderr
    assert not (tmp_path / "o.onnx").exists()


def _conv_channels(candidate) -> float:
    """A validation function of the model itself: its convs' output channels / 100 (1.0 for
    the whole chain), so a drop of 0.2 allows removing at most 20 channels."""
    model = onnx.load(candidate.path)
    weights = {t.name: t.dims[0] for t in model.graph.initializer}
    return sum(weights[n.input[1]] for n in model.graph.node if n.op_type == "Conv") / 100


def test_validation_function_within_its_drop_wins_over_the_latency_target(tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    result = onnxprune.prune(
        three_unit_chain(),
        latency_target=0.85,
        timer=_timer(),
        calibration=str(calib),
        validate=_conv_channels,
        max_drop=0.2,
    )
    lat = result.report.latency.to_dict()
    # 0.85 needs two units at 16 (32 channels); the function allows 20: one unit, 0.22 / 0.24 ms
    assert lat["limited_by_constraint"] and lat["constraint"].endswith("_conv_channels within 0.2 of the original's 1")
    assert lat["constraint_value"] == pytest.approx(0.84)
    assert lat["measured_ratio"] == pytest.approx(0.22 / 0.24) and not lat["met"]
    assert result.report.validation is not None and result.report.validation.final == pytest.approx(0.84)


class _ShapeTimer(StepTimer):
    """A StepTimer that records the input shapes every model is timed at."""

    def __init__(self) -> None:
        super().__init__(step=16, base=1e-4, per_block=1e-5)
        self.shapes: list[dict] = []

    def load(self, model, input_shapes, source):
        self.shapes.append(dict(input_shapes))
        return super().load(model, input_shapes, source)


def test_a_deployment_batch_is_timed_with_calibration_data_on_a_dynamic_batch_model(tmp_path: Path) -> None:
    # --batch 4 with --calibration on a model with a dynamic batch was refused: the data's
    # per-sample shape (batch 1, taken for the analysis) was passed as the user's --input-shape,
    # "has batch 1, --batch says 4". Now the table and the A/B runs time batches of 4; the analysis
    # and the fidelity still see the data's samples
    from onnxprune.latency import LatencySettings
    from onnxprune.latency.measure import timing_shapes
    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", [None, 3, 8, 8])
    for _ in range(3):
        x = b.op("Relu", b.conv(x, 32))
    b.output(b.op("Flatten", b.op("GlobalAveragePool", b.conv(x, 4, k=1, pads=0)), axis=1))
    model = b.build()
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    timer = _ShapeTimer()
    result = onnxprune.prune(
        model,
        latency_target=0.85,
        latency=LatencySettings(batch=4),
        calibration=str(calib),
        timer=timer,
        **COSINE,
    )
    lat = result.report.latency.to_dict()
    assert lat["met"] and lat["settings"]["batch"] == 4
    ab = [s for s in timer.shapes if s]  # the whole models (the table's subgraphs have static shapes: {})
    assert ab and all(s == {"x": (4, 3, 8, 8)} for s in ab)
    # only a dynamic batch of 1 becomes the deployment's; a static batch or another size stays
    static = onnx.helper.make_model(
        onnx.helper.make_graph([], "g", [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])], [])
    )
    assert timing_shapes(model, {"x": (1, 3, 8, 8)}, 4) == {"x": (4, 3, 8, 8)}
    assert timing_shapes(model, {"x": (2, 3, 8, 8)}, 4) == {"x": (2, 3, 8, 8)}
    assert timing_shapes(static, {"y": (1, 3)}, 4) == {"y": (1, 3)}
