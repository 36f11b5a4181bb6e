"""tools/bench_latency_heldout.py: the latency benchmark's top-1 rows scored on more held-out
inputs, paired (tiny MatMul classifiers whose answers are known per input), and the report's
table of them with its noise verdict. Nothing is timed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bench_latency_heldout as heldout  # noqa: E402
from latency_bench_report import centered_verdict, detection_heldout_table, heldout_table, labelled_table  # noqa: E402

# classifiers of 4-dim inputs into 3 classes: one-hot input i answers row i of W
ORIGINAL = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
LATENCY = [[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]]  # right on e0, e1
MACS = [[0, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]  # right on e1, e2, e3


def _classifier(path: Path, w: list[list[int]], batch: int | str = 1) -> str:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(np.asarray(w, np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


def _onehots(*idx: int) -> np.ndarray:
    return np.eye(4, dtype=np.float32)[list(idx)]


@pytest.fixture
def models(tmp_path: Path) -> tuple[str, str, str]:
    return (
        _classifier(tmp_path / "original.onnx", ORIGINAL),
        _classifier(tmp_path / "latency.onnx", LATENCY),
        _classifier(tmp_path / "macs.onnx", MACS),
    )


def test_paired_top1_counts_each_plans_answers_on_the_same_inputs(models) -> None:
    original, latency, macs = models
    # e0: only the latency plan right; e1: both; e2, e3: only the MACs plan
    got = heldout.paired_top1(original, latency, macs, "x", [_onehots(0, 1, 2, 3), _onehots(0, 0, 1)])
    assert got["n"] == 7
    assert got["latency"]["agree"] == 5 and got["latency"]["top1"] == pytest.approx(5 / 7, abs=1e-12)
    assert got["macs"]["agree"] == 4 and got["macs"]["top1"] == pytest.approx(4 / 7, abs=1e-12)
    assert (got["only_latency"], got["only_macs"]) == (3, 2)
    # one-hot outputs: cosine 1 where right, 0 where wrong
    assert got["latency"]["cosine"] == pytest.approx(5 / 7, abs=1e-6)
    assert got["macs"]["cosine"] == pytest.approx(4 / 7, abs=1e-6)


def test_heldout_row_makes_whole_seeds_after_the_evaluation_seed(models, tmp_path: Path) -> None:
    original, latency, macs = models
    calls: list[tuple[str, int, int]] = []

    def make(base: str, count: int, seed: int) -> dict:
        calls.append((base, count, seed))
        return {"x": _onehots(*([0] * count if seed == heldout.SEEDS_FROM else [2] * count))}

    row = {"latency_plan": {"file": latency}, "macs_plan": {"file": macs, "macs_target": 0.534}}
    spec = {"path": original, "input": "x"}
    got = heldout.heldout_row(row, spec, 40, make)  # 40 inputs: two seeds of 32
    assert calls == [("original.onnx", 32, 3), ("original.onnx", 32, 4)]
    assert got["n"] == 64 and got["seeds"] == [3, 4] and got["macs_target"] == 0.534
    assert (got["only_latency"], got["only_macs"]) == (32, 32)
    state = tmp_path / "rows.json"
    rows = {"pplcnet": dict(row)}
    heldout.heldout_phase(
        ["pplcnet", "digits"], rows, state, lambda n: {**spec, "heldout": 40} if n == "pplcnet" else {}, make
    )
    assert json.loads(state.read_text())[0]["heldout"]["n"] == 64 and "heldout" in rows["pplcnet"]


def _row(model: str, only_latency: int, only_macs: int) -> dict:
    return {
        "model": model,
        "reconstruct": model.endswith("+rc"),
        "heldout": {
            "n": 256,
            "seeds": [3, 10],
            "macs_target": 0.534,
            "latency": {"top1": 0.707, "cosine": 0.7909},
            "macs": {"top1": 0.7148, "cosine": 0.7607},
            "only_latency": only_latency,
            "only_macs": only_macs,
        },
    }


def test_heldout_table_says_a_tie_when_the_paired_difference_is_within_its_noise() -> None:
    assert heldout_table([]) == []
    lines = heldout_table([_row("pplcnet+rc", 24, 26), _row("pplcnet", 30, 10), _row("a", 10, 30)])
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
    assert body[0] == (
        "| pplcnet + reconstruct | 256 (3–10) | 0.7070 (0.7909) | 0.534: 0.7148 (0.7607) | 24 | 26 | tie (within noise) |"
    )
    # 30 vs 10: |20| > 2 sqrt(40) = 12.6; 10 vs 30 the other way
    assert body[1].endswith("| 30 | 10 | yes |") and body[2].endswith("| 10 | 30 | **no** |")
    # at the edge: |9 - 1| = 8 > 2 sqrt(10) = 6.3 stands out, |8 - 2| = 6 < 2 sqrt(10) does not
    assert heldout_table([_row("b", 9, 1)])[-1].endswith("| yes |")
    assert heldout_table([_row("b", 8, 2)])[-1].endswith("| tie (within noise) |")
    # a MACs plan further than the match from the latency plan's ratio: not a comparison at equal latency
    assert heldout_table([{**_row("b", 9, 1), "macs_plan_gap": 0.02}])[-1].endswith("| yes (not at equal latency) |")
    final = {"latency_plan_ratio": 0.69, "macs_plan_ratio": 0.695}  # apart +0.005: matched
    assert heldout_table([{**_row("b", 9, 1), "final": final}])[-1].endswith("| 9 | 1 | yes |")


def test_the_zoo_verdict_tells_no_plan_apart_when_both_kept_nothing_input_dependent() -> None:
    # EfficientNet-B0 and ResNet-50 at 0.7x (19:15 window): centered cosines about 0 on both plans
    assert centered_verdict(0.0034, 0.0025) == "neither keeps any (both < 0.05)"
    assert centered_verdict(-0.0198, -0.0197) == "neither keeps any (both < 0.05)"
    assert centered_verdict(0.3, 0.049) == "yes" and centered_verdict(0.049, 0.3) == "**no**"


def test_paired_labelled_scores_accuracy_against_the_labels_and_agreement(tmp_path: Path) -> None:
    # dynamic batch (the trained zoo's exports): 40 inputs run in batches of 32 and 8
    original, latency, macs = (
        _classifier(tmp_path / f"{n}.onnx", w, "N") for n, w in (("o", ORIGINAL), ("l", LATENCY), ("m", MACS))
    )
    x = _onehots(*([0, 1, 2, 3] * 10))
    labels = np.array([0, 1, 1, 0] * 10)  # the original is right on e0, e1, e3; wrong on e2
    got = heldout.paired_labelled(original, latency, macs, "x", x, labels)
    assert got["n"] == 40 and got["original"]["accuracy"] == pytest.approx(0.75, abs=1e-12)
    # latency answers 0, 1, 1, 2: right on e0, e1, e2; MACs answers 1, 1, 2, 0: right on e1, e3
    assert got["latency"]["accuracy"] == pytest.approx(0.75, abs=1e-12)
    assert got["macs"]["accuracy"] == pytest.approx(0.5, abs=1e-12)
    assert got["latency"]["top1"] == pytest.approx(0.5, abs=1e-12)  # agrees with the original on e0, e1
    assert got["macs"]["top1"] == pytest.approx(0.75, abs=1e-12)  # on e1, e2, e3
    assert (got["only_latency"], got["only_macs"]) == (20, 10)  # e0, e2 vs e3


def test_labelled_table_rows_and_verdicts() -> None:
    assert labelled_table([]) == []

    def row(a: int, b: int, apart: float = 0.003) -> dict:
        h = {
            "n": 512,
            "seeds": [3, 3],
            "labelled": True,
            "macs_target": 0.5,
            "original": {"accuracy": 0.5},
            "latency": {"accuracy": 0.3, "top1": 0.4, "cosine": 0.8},
            "macs": {"accuracy": 0.2, "top1": 0.3, "cosine": 0.7},
            "only_latency": a,
            "only_macs": b,
        }
        return {"model": "resnet50_glyphs", "heldout": h, "macs_plan_gap": apart}

    lines = labelled_table([row(60, 20), row(20, 24), row(60, 20, apart=0.02)])
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
    assert body[0] == (
        "| resnet50_glyphs | 512 (3) | 0.5000 | 0.3000, 0.4000, 0.8000 | 0.500: 0.2000, 0.3000, 0.7000 | 60 | 20 | yes |"
    )
    assert body[1].endswith("| 20 | 24 | tie (within noise) |")
    assert body[2].endswith("| yes (not at equal latency) |")


def test_heldout_phase_leaves_the_previous_state_whole_when_its_write_fails(
    models, tmp_path: Path, monkeypatch
) -> None:
    original, latency, macs = models
    row = {"model": "pplcnet", "latency_plan": {"file": latency}, "macs_plan": {"file": macs, "macs_target": 0.5}}
    state = tmp_path / "state" / "rows.json"
    state.parent.mkdir()
    heldout.save_rows(state, {"pplcnet": row})
    before = state.read_text()
    real = Path.write_text

    def half_then_fail(self: Path, text: str, *args, **kwargs) -> int:
        real(self, text[: len(text) // 2], *args, **kwargs)  # a run stopped mid-write
        raise OSError("disk full")

    def make(base: str, count: int, seed: int) -> dict:
        return {"x": _onehots(*([0] * count))}

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        heldout.heldout_phase(
            ["pplcnet"], {"pplcnet": dict(row)}, state, lambda n: {"path": original, "input": "x", "heldout": 8}, make
        )
    monkeypatch.undo()
    assert state.read_text() == before and json.loads(before)[0]["model"] == "pplcnet"
    assert [p.name for p in state.parent.iterdir()] == ["rows.json"]  # no temporary file left
    heldout.save_rows(state, {"b": {"model": "b", "v": 3}})
    assert json.loads(state.read_text()) == [{"model": "b", "v": 3}]


# end-to-end detector rows (x1, y1, x2, y2, score, class): two boxes and three empty rows
BOXES = [[0, 0, 10, 10, 0, 0], [20, 20, 30, 30, 0, 1], [0] * 6, [0] * 6, [0] * 6]


def _detector(path: Path, score_kept: tuple[float, float]) -> str:
    """A stand-in detector: its input rows, the two boxes' scores multiplied by ``score_kept``."""
    mask = np.ones((1, 5, 6), np.float32)
    mask[0, 0, 4], mask[0, 1, 4] = score_kept
    graph = helper.make_graph(
        [helper.make_node("Mul", ["images", "M"], ["output0"])],
        "detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 5, 6])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 6])],
        [numpy_helper.from_array(mask, "M")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


def _pages(*scores: tuple[float, float]) -> np.ndarray:
    pages = np.tile(np.asarray(BOXES, np.float32), (len(scores), 1, 1))
    pages[:, 0, 4], pages[:, 1, 4] = np.asarray(scores, np.float32).T
    return pages


@pytest.fixture
def detectors(tmp_path: Path) -> tuple[str, str, str]:
    # the latency plan loses the second box's score, the MACs plan the first's
    return (
        _detector(tmp_path / "yolo.onnx", (1, 1)),
        _detector(tmp_path / "latency.onnx", (1, 0)),
        _detector(tmp_path / "macs.onnx", (0, 1)),
    )


def test_paired_detection_scores_each_page_against_the_original(detectors) -> None:
    original, latency, macs = detectors
    # both boxes: each plan keeps one of two (0.5 each); box 1 only: latency 1, MACs 0 (twice);
    # box 2 only: latency 0, MACs 1; no box: neither detects anything, 1 for both
    batches = [_pages((0.9, 0.9), (0.9, 0.1), (0.8, 0.0)), _pages((0.1, 0.9), (0.1, 0.1))]
    got = heldout.paired_detection(original, latency, macs, "images", batches)
    assert got["n"] == 5 and got["metric"] == "detection" and got["reference_detections"] == 5
    assert got["latency"]["detection"] == pytest.approx((0.5 + 1 + 1 + 0 + 1) / 5, abs=1e-12)
    assert got["macs"]["detection"] == pytest.approx((0.5 + 0 + 0 + 1 + 1) / 5, abs=1e-12)
    assert (got["higher_latency"], got["higher_macs"]) == (2, 1)
    diff = np.array([0, 1, 1, -1, 0], float)
    assert got["mean_difference"] == pytest.approx(0.2, abs=1e-12)
    assert got["difference_se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(5), abs=1e-12)
    ref = np.concatenate(batches).reshape(5, -1).astype(np.float64)
    lat = ref.copy()
    lat[:, 10] = 0  # the second box's score
    cos = (ref * lat).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(lat, axis=1))
    assert got["latency"]["cosine"] == pytest.approx(cos.mean(), abs=1e-6)


def test_heldout_row_of_a_detector_pairs_detection_scores(detectors) -> None:
    original, latency, macs = detectors
    seeds: list[int] = []

    def make(base: str, count: int, seed: int) -> dict:
        seeds.append(seed)
        return {"images": _pages(*[(0.9, 0.1)] * count)}  # box 1 only: the latency plan keeps it

    row = {"latency_plan": {"file": latency}, "macs_plan": {"file": macs, "macs_target": 0.47}}
    spec = {"path": original, "input": "images", "heldout_metric": "detection"}
    got = heldout.heldout_row(row, spec, 33, make)
    assert seeds == [3, 4] and got["n"] == 64 and got["seeds"] == [3, 4] and got["macs_target"] == 0.47
    assert (got["latency"]["detection"], got["macs"]["detection"]) == (1.0, 0.0)
    assert (got["higher_latency"], got["higher_macs"]) == (64, 0)


def test_cached_make_makes_each_seed_once_and_reads_it_back(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []

    def make(base: str, count: int, seed: int) -> dict:
        calls.append((base, count, seed))
        return {"x": np.random.default_rng(seed).uniform(0, 1, (count, 3)).astype(np.float64)}

    cached = heldout.cached_make(tmp_path / "inputs", make)
    first = cached("m.onnx", 4, 3)
    again = heldout.cached_make(tmp_path / "inputs", make)("m.onnx", 4, 3)
    assert calls == [("m.onnx", 4, 3)]
    assert again["x"].dtype == np.float32 and np.array_equal(first["x"], again["x"])
    assert np.array_equal(again["x"], make("m.onnx", 4, 3)["x"].astype(np.float32))
    cached("m.onnx", 4, 5)
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == ["m.onnx.4.3.npz", "m.onnx.4.5.npz"]


def test_heldout_inputs_phase_makes_every_seed_of_each_model_file_once() -> None:
    calls: list[tuple[str, int, int]] = []
    specs = {
        "pplcnet": {"path": "/c/pplcnet.onnx", "heldout": 1024},
        "pplcnet+rc": {"path": "/c/pplcnet.onnx", "heldout": 1024},
        "yolo26n": {"path": "/c/yolo.onnx", "heldout": 256},
        "digits": {"path": "/c/digits.onnx"},
        "resnet50_glyphs": {"path": "/z/resnet50.onnx", "heldout": 512, "kind": "trained"},
    }

    def make(base: str, count: int, seed: int) -> dict:
        calls.append((base, count, seed))
        return {}

    done = heldout.heldout_inputs_phase(list(specs), specs.__getitem__, make, n=40)
    assert done == ["pplcnet.onnx", "yolo.onnx"]
    assert calls == [("pplcnet.onnx", 32, 3), ("pplcnet.onnx", 32, 4), ("yolo.onnx", 32, 3), ("yolo.onnx", 32, 4)]
    calls.clear()
    heldout.heldout_inputs_phase(["yolo26n"], specs.__getitem__, make)  # the spec's count
    assert [c[2] for c in calls] == list(range(3, 11))


def test_heldout_phase_takes_the_count_asked_for(models, tmp_path: Path) -> None:
    original, latency, macs = models

    def make(base: str, count: int, seed: int) -> dict:
        return {"x": _onehots(*([0] * count))}

    rows = {"pplcnet": {"latency_plan": {"file": latency}, "macs_plan": {"file": macs, "macs_target": 0.5}}}
    spec = {"path": original, "input": "x", "heldout": 32}
    heldout.heldout_phase(["pplcnet"], rows, tmp_path / "rows.json", lambda n: spec, make, n=70)
    assert rows["pplcnet"]["heldout"]["n"] == 96 and rows["pplcnet"]["heldout"]["seeds"] == [3, 5]


def test_detection_heldout_table_rows_and_verdicts() -> None:
    assert detection_heldout_table([]) == []

    def row(a: int, b: int, apart: float = 0.003) -> dict:
        h = {
            "n": 256,
            "seeds": [3, 10],
            "metric": "detection",
            "macs_target": 0.47,
            "reference_detections": 301,
            "latency": {"detection": 0.0512, "cosine": 0.6801},
            "macs": {"detection": 0.0123, "cosine": 0.6652},
            "higher_latency": a,
            "higher_macs": b,
            "mean_difference": 0.0389,
            "difference_se": 0.0121,
        }
        return {"model": "yolo26n+rc", "reconstruct": True, "heldout": h, "macs_plan_gap": apart}

    lines = detection_heldout_table([row(30, 10), row(10, 12), row(30, 10, apart=-0.02)])
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
    assert body[0] == (
        "| yolo26n + reconstruct | 256 (3–10) | 301 | 0.0512 (0.6801) | 0.470: 0.0123 (0.6652) | 30 | 10 "
        "| +0.0389 ± 0.0121 | yes |"
    )
    assert body[1].endswith("| 10 | 12 | +0.0389 ± 0.0121 | tie (within noise) |")
    assert body[2].endswith("| yes (not at equal latency) |")
