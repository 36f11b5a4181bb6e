"""Sensitivity, the fidelity budget and reconstruction, on tiny graphs with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import one_line_error, run_cli

import onnxprune
from onnxprune import cli
from onnxprune.testing import GraphBuilder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _calib(tmp_path: Path, shape: tuple[int, ...], n: int = 16, name: str = "x") -> str:
    path = tmp_path / "calib.npz"
    np.savez(path, **{name: np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)})
    return str(path)


def _free_and_busy_model() -> onnx.ModelProto:
    """Two branches: the reader of branch 'free' has zero weights for it, so removing any of
    it changes nothing; branch 'busy' matters."""
    b = GraphBuilder(opset=17, seed=21)
    x = b.input("x", [None, 3, 6, 6])
    free = b.op("Relu", b.conv(x, 8))
    busy = b.op("Relu", b.conv(x, 8))
    w = b.weights([4, 16, 1, 1])
    w[:, :8] = 0  # the free branch's channels are read with zero weights
    cat = b.op("Concat", free, busy, axis=1, channels=16)
    b.output(
        b.gemm(
            b.op("Flatten", b.op("GlobalAveragePool", b.conv(cat, 4, k=1, pads=0, weight=b.const(w, "W"))), axis=1),
            4,
            3,
        )
    )
    return b.build()


def test_unit_whose_removal_changes_nothing_is_found_free(tmp_path: Path) -> None:
    model = _free_and_busy_model()
    result = onnxprune.sensitivity(
        model, _calib(tmp_path, (3, 6, 6)), "l2", compensation="none", fidelity_metrics={"*": "cosine"}
    )
    by_layer = {u.unit.layers[0]: u for u in result.units}
    first, second = [s.node for s in onnxprune.analyze(model).sources][:2]
    assert all(abs(v - 1.0) < 1e-6 for v in by_layer[first].fidelity.values())
    assert by_layer[second].fidelity[0.5] < 0.999
    assert by_layer[first].macs_saved[0.5] > 0


def test_fidelity_budget_removes_the_free_branch_first(tmp_path: Path) -> None:
    model = _free_and_busy_model()
    r = onnxprune.prune(
        model,
        "l2",
        min_fidelity=0.9999,
        calibration=_calib(tmp_path, (3, 6, 6)),
        compensation="none",
        fidelity_metrics={"*": "cosine"},
    )
    removed = set(r.plan.removed_groups)
    src = r.analysis.sources
    cut = {s.node: sum(int(x) in removed for x in r.analysis.roots(s.ids)) for s in src}
    assert cut[src[0].node] >= 4 and cut[src[1].node] == 0
    assert r.report.to_dict()["fidelity_score"] >= 0.9999
    assert r.report.verification.passed


def test_fidelity_budget_with_macs_target(tmp_path: Path) -> None:
    calib = str(FIXTURES / "digits_calibration.npz")
    r = onnxprune.prune(FIXTURES / "digits_cnn.onnx", "l2", min_fidelity=0.5, macs_target=0.7, calibration=calib)
    assert r.report.macs_after <= 0.7 * r.report.macs_before + 1
    d = r.report.to_dict()
    assert d["sensitivity"]["units"] and 0 <= d["fidelity_score"] <= 1
    assert "split 3:1" in d["evaluation"]


def _redundant_channel_model() -> onnx.ModelProto:
    b = GraphBuilder(opset=17, seed=22)
    x = b.input("x", [None, 3, 6, 6])
    w = b.weights([4, 3, 3, 3])
    w[3] = 0.5 * w[1]  # channel 3 = 0.5 x channel 1 (and after Relu too): smallest L2, redundant
    w[0] *= 3
    w[2] *= 3
    bias = np.zeros(4, np.float32)
    y = b.op(
        "Relu", b.op("Conv", x, b.const(w, "W"), b.const(bias, "B"), channels=4, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    )
    b.output(b.conv(y, 5, k=3, pads=1))
    return b.build()


def test_reconstruction_restores_a_linearly_redundant_channel(tmp_path: Path) -> None:
    model = _redundant_channel_model()
    calib = _calib(tmp_path, (3, 6, 6), n=32)
    plain = onnxprune.prune(model, "l2", ratio=0.25, calibration=calib, compensation="none")
    rec = onnxprune.prune(model, "l2", ratio=0.25, calibration=calib, compensation="none", reconstruct=True)
    assert plain.report.channels_removed == 1 == rec.report.channels_removed
    feeds = {"x": np.random.default_rng(5).standard_normal((4, 3, 6, 6)).astype(np.float32)}
    from conftest import run

    ref = run(model, feeds)[0]
    err_plain = np.abs(run(plain.model, feeds)[0] - ref).max()
    err_rec = np.abs(run(rec.model, feeds)[0] - ref).max()
    assert err_plain > 1e-2 * np.abs(ref).max()
    assert err_rec <= 1e-4 * np.abs(ref).max()  # exact up to float and the tiny ridge
    assert rec.report.to_dict()["reconstructed_layers"]


def test_sensitivity_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    argv = [
        "sensitivity",
        str(FIXTURES / "digits_cnn.onnx"),
        "--calibration",
        str(FIXTURES / "digits_calibration.npz"),
        "--json",
        str(out),
        "--plot",
        str(png),
    ]
    assert cli.main(argv) == 0
    assert "units" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["units"] and all(set(u["fidelity"]) == {"0.1", "0.25", "0.5"} for u in data["units"])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert (
        cli.main(["sensitivity", str(FIXTURES / "digits_cnn.onnx"), "--calibration", str(tmp_path / "none.npz")]) == 2
    )
    assert (
        cli.main(["prune", str(FIXTURES / "digits_cnn.onnx"), "-o", str(tmp_path / "o.onnx"), "--min-fidelity", "0.9"])
        == 2
    )  # needs calibration


def test_fidelity_budget_keeps_round_to_and_excludes() -> None:
    calib = str(FIXTURES / "digits_calibration.npz")
    names = [s.node for s in onnxprune.analyze(FIXTURES / "digits_cnn.onnx").sources]
    r = onnxprune.prune(
        FIXTURES / "digits_cnn.onnx", "l2", min_fidelity=0.5, calibration=calib, round_to=4, exclude=(names[0],)
    )
    assert r.report.layers, "the budget should remove something"
    for layer in r.report.layers:
        assert layer.channels_after % 4 == 0, layer
        assert layer.node != names[0]


def test_fidelity_budget_counts_reconstruction(tmp_path: Path) -> None:
    """With --reconstruct the allocation measures the reconstructed model (cross-fitted on
    halves of the calibration samples): the redundant channel, which costs fidelity when merely
    removed, costs none once its readers are refitted, so it goes."""
    model = _redundant_channel_model()
    calib = _calib(tmp_path, (3, 6, 6), n=32)
    plain = onnxprune.prune(model, "l2", min_fidelity=0.9999, calibration=calib, compensation="none")
    rec = onnxprune.prune(model, "l2", min_fidelity=0.9999, calibration=calib, compensation="none", reconstruct=True)
    assert plain.report.channels_removed == 0
    assert rec.report.channels_removed == 1 and rec.report.layers[0].channels_after == 3
    assert rec.report.to_dict()["fidelity_score"] >= 0.9999  # judged on the held-out quarter


def test_reconstructed_trials_judge_out_of_sample() -> None:
    """Every calibration sample is judged by a fit made without it."""
    from onnxprune.reconstruction_trials import ReconstructedTrials

    model = _redundant_channel_model()
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 6, 6)).astype(np.float32)} for i in range(6)]
    trials = ReconstructedTrials(model, onnxprune.analyze(model), feeds)
    for fit, judge in trials.folds:
        assert not {id(f) for f in fit} & {id(f) for f in judge}
    assert sorted(id(f) for _, judge in trials.folds for f in judge) == sorted(id(f) for f in feeds)
    assert trials.fidelity([], None) == pytest.approx(1.0)


# -- first-contact sweep of session 8 (was tests/test_contact7.py) --


def test_sensitivity_with_the_zero_criterion_says_why_not_unknown() -> None:
    """Before: "unknown criterion 'zero'; choose from zero, l1, ..." (it offered the name it refused)."""
    p = run_cli(
        "sensitivity",
        str(FIXTURES / "digits_cnn.onnx"),
        "--calibration",
        str(FIXTURES / "digits_calibration.npz"),
        "--criterion",
        "zero",
    )
    err = one_line_error(p)
    assert err.startswith(
        "onnxprune: error: criterion 'zero' removes only provably constant channels and scores none; "
        "rank by a lossy criterion: l1, l2, "
    ), err
    assert "zero," not in err.split("lossy criterion:")[1]
