"""tools/bench_latency.py's matching of the --macs-target plan to the latency plan's measured
latency: the scan (secant/bisection on a fake, deterministic measurement) and the final run's
re-match among the scan's nearest plans. Nothing is timed here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bench_latency as bench  # noqa: E402
import bench_latency_scan as bench_scan  # noqa: E402


def _entry(target: float, gap: float) -> dict:
    return {"macs_target": target, "file": f"m{target}.onnx", "ab": {"gap": gap}}


def _fake(curve):
    """measure(t) for a MACs->latency-ratio curve, the latency plan at 0.70 in every run."""
    calls: list[float] = []

    def measure(t: float) -> dict:
        calls.append(t)
        return _entry(t, curve(t) - 0.70)

    return measure, calls


def test_scan_matches_a_steep_curve_within_tolerance():
    # steep near the goal (MobileNetV2-like: latency 0.63 at MACs 0.54, 0.79 at 0.71)
    measure, calls = _fake(lambda t: 0.63 + (t - 0.54) * 0.16 / 0.17)
    chosen = bench_scan.matched_scan(0.70, 0.71, measure, steps=6)
    assert abs(chosen["ab"]["gap"]) <= bench_scan.MATCH
    assert len(calls) <= 6
    assert calls[0] == pytest.approx(0.71)


def test_scan_keeps_the_closest_when_the_steps_run_out():
    measure, calls = _fake(lambda t: 0.85 + 0.0 * t)  # no MACs target reaches 0.70 (overhead-bound)
    chosen = bench_scan.matched_scan(0.70, 0.11, measure, steps=3)
    assert len(calls) <= 3
    assert chosen["ab"]["gap"] == pytest.approx(0.15, abs=1e-12)
    assert chosen["macs_target"] == min(calls)  # equal gaps: the lowest target


def test_final_candidates_bracket_the_latency_plan():
    scan = [_entry(0.710, 0.113), _entry(0.543, -0.066), _entry(0.605, -0.038), _entry(0.687, 0.024)]
    got = [e["macs_target"] for e in bench_scan.final_candidates(scan)]
    # the closest too slow (+0.024), the closest fast enough (-0.038), then the next closest (-0.066)
    assert got == [0.687, 0.605, 0.543]
    assert [e["macs_target"] for e in bench_scan.final_candidates(scan, most=2)] == [0.687, 0.605]


def test_final_candidates_one_sided_scan():
    scan = [_entry(0.5, 0.02), _entry(0.4, 0.005), _entry(0.45, 0.01), _entry(0.3, 0.03)]
    assert [e["macs_target"] for e in bench_scan.final_candidates(scan)] == [0.4, 0.45, 0.5]


def test_rematch_picks_the_closest_in_the_final_run():
    assert bench_scan.rematch([0.757, 0.690, 0.655], 0.673) == 1  # 0.017 beats 0.018 and 0.084
    assert bench_scan.rematch([0.700, 0.680], 0.690) == 1  # a tie: the faster plan
    assert bench_scan.rematch([0.72], 0.60) == 0


def test_model_spec_reconstructed_rows():
    spec = bench.model_spec("pplcnet+rc")
    assert spec["reconstruct"] is True and spec["base"] == "pplcnet"
    assert spec["path"] == bench.MODELS["pplcnet"]["path"]
    assert "reconstruct" not in bench.model_spec("pplcnet")
    assert "reconstruct" not in bench.MODELS["pplcnet"]  # the table's spec is not changed
    names = bench.default_models()
    assert names.index("pplcnet+rc") == names.index("pplcnet") + 1
    assert names.index("digits+rc") == names.index("digits") + 1
    assert names.index("yolo26n+rc") == names.index("yolo26n") + 1
    assert "malimg" not in names and "malimg+rc" not in names
    # the trained zoo: every architecture, each with its reconstructed row after it
    for m in ("mobilenet_v2_glyphs", "efficientnet_b0_glyphs", "resnet50_glyphs"):
        assert names.index(m + "+rc") == names.index(m) + 1
    assert "resnet50" not in names and "resnet50+rc" not in names  # the random-weight zoo: recorded rows only


def test_seeded_rows_keep_the_recorded_rows_the_work_folder_does_not_have():
    recorded = [{"model": "pplcnet", "v": 1}, {"model": "resnet50_glyphs", "v": 1}]
    work = {"resnet50_glyphs": {"model": "resnet50_glyphs", "v": 2}, "resnet50_glyphs+rc": {"model": "x", "v": 2}}
    got = bench.seeded_rows(recorded, work)
    assert got["pplcnet"] == {"model": "pplcnet", "v": 1}
    assert got["resnet50_glyphs"]["v"] == 2 and got["resnet50_glyphs+rc"]["v"] == 2
    assert set(got) == {"pplcnet", "resnet50_glyphs", "resnet50_glyphs+rc"}


def test_matched_macs_plan_records_every_plan_timed():
    measure, calls = _fake(lambda t: 0.63 + (t - 0.54) * 0.16 / 0.17)
    got = bench_scan.matched_macs_plan(0.70, 0.7104, measure, steps=6)
    assert [e["macs_target"] for e in got["macs_scan"]] == calls and calls[0] == pytest.approx(0.71)
    assert got["macs_plan"] in got["macs_scan"] and got["macs_plan_gap"] == got["macs_plan"]["ab"]["gap"]
    assert got["macs_plan_matched"] is True
    far, _ = _fake(lambda t: 0.85 + 0.0 * t)
    assert bench_scan.matched_macs_plan(0.70, 0.11, far, steps=2)["macs_plan_matched"] is False


def test_rematch_row_makes_the_closest_in_the_final_run_the_match():
    candidates = [_entry(0.687, 0.024), _entry(0.605, -0.038), _entry(0.543, -0.066)]
    row: dict = {"macs_plan": candidates[0]}
    assert bench_scan.rematch_row(row, candidates, [0.757, 0.690, 0.655], 0.673) == 1
    assert row["macs_plan"] is candidates[1] and row["macs_plan_matched"] is False  # 0.017 apart
    assert bench_scan.rematch_row(row, candidates, [0.757, 0.690, 0.676], 0.673) == 2
    assert row["macs_plan"] is candidates[2] and row["macs_plan_matched"] is True


def test_refined_target_interpolates_or_extrapolates_the_final_runs_gaps():
    # a bracket in the final run: linear between the closest too slow and the closest fast enough
    assert bench_scan.refined_target([(0.60, 0.03), (0.50, -0.02), (0.45, -0.05)], [0.6, 0.5, 0.45]) == 0.54
    # every plan on one side (EfficientNet-B0's final run: +0.016, +0.043, +0.044): from the two nearest,
    # their slope clamped to SLOPE (here 0.027 / 0.012 = 2.25), toward fewer MACs
    assert bench_scan.refined_target([(0.568, 0.016), (0.580, 0.043), (0.595, 0.044)], []) == 0.561
    # the digits CNN's (both faster): the slope 0.035 / 0.061 toward more MACs
    assert bench_scan.refined_target([(0.111, -0.038), (0.050, -0.073)], [0.111, 0.05]) == 0.177
    # one plan: slope 1; within the match already, or only a target tried before: nothing more
    assert bench_scan.refined_target([(0.4, 0.05)], []) == 0.35
    assert bench_scan.refined_target([(0.4, 0.009), (0.3, -0.2)], []) is None
    assert bench_scan.refined_target([(0.4, 0.05)], [0.35]) is None
    assert bench_scan.refined_target([(0.06, 0.2)], []) == bench_scan.LO  # clamped to the range the scan may try


class _Timings:
    """measure_models' result for files whose ratio is known (the original 1 ms, each run's p10-p90
    its ratio -+ ``spread``): no timing."""

    def __init__(self, ratios: list[float], spread: float = 0.01, files: list[str] | None = None) -> None:
        self.ratio = ratios
        self.latency = [1e-3 * r for r in ratios]
        self.spread, self.files = spread, files or [f"f{i}" for i in range(len(ratios))]

    def to_dict(self) -> dict:
        models = [
            {
                "model": f,
                "ratio": r,
                "ratio_p10": r - self.spread,
                "ratio_p90": r + self.spread,
                "latency_s": 1e-3 * r,
                "median_s": 1.1e-3 * r,
                "median_ratio": r,
                "precision": "f32",
            }
            for f, r in zip(self.files, self.ratio)
        ]
        return {"models": models, "rounds": 20, "runs_per_round": 50, "settings": {}}


def _by_file(ratios: dict[str, float]):
    """bench.timed for files whose ratios are known (the original's is 1)."""
    calls: list[list[str]] = []

    def timed(files, spec, seconds, rounds):
        calls.append(list(files))
        return _Timings([1.0, *(ratios[f] for f in files[1:])], files=list(files))

    return timed, calls


def test_grouped_final_combines_one_run_per_macs_plan():
    triples = [
        _Timings([1.0, 0.75, 0.70], files=["o", "a", "l"]).to_dict(),
        _Timings([1.0, 0.69, 0.72], 0.02, files=["o", "b", "l"]).to_dict(),
        _Timings([1.0, 0.66, 0.69], files=["o", "c", "l"]).to_dict(),
    ]
    triples[1]["models"][0]["latency_s"] = 1.4e-3  # this run's original ran slower: the median is taken
    pair = _Timings([1.0, 0.9], files=["o", "k"]).to_dict()
    t = bench_scan.grouped_final(triples, pair)
    assert [m["model"] for m in t["models"]] == ["o", "l", "a", "b", "c", "k"]
    assert t["models"][0]["latency_s"] == pytest.approx(1e-3) and t["models"][0]["ratio"] == 1.0
    lat = t["models"][1]
    assert lat["ratio"] == pytest.approx(0.70) and lat["ratio_p10"] == pytest.approx(0.69 - 0.01)
    assert lat["ratio_p90"] == pytest.approx(0.72 + 0.02) and lat["latency_s"] == pytest.approx(0.70e-3)
    assert [m["ratio"] for m in t["models"][2:]] == [0.75, 0.69, 0.66, 0.9]
    assert t["gaps"] == pytest.approx([0.05, -0.03, -0.03]) and t["groups"] == 4
    with pytest.raises(ValueError):
        bench_scan.grouped_final([])


def test_phase_time_refines_a_final_run_that_matched_none(monkeypatch):
    # every MACs plan measures 0.05 slower against the latency plan in the final run than in the
    # scan (the machine's state moved): the final runs match none (+0.07, +0.04, +0.02); the
    # refinement's plan (0.45, from the two nearest) is pruned and timed in a run of its own with the
    # original and the latency plan; the kept plan in a pair with the original
    shift = 0.05

    def curve(t: float) -> float:  # the MACs plan's ratio; the latency plan's is 0.70
        return 0.70 + (t - 0.50) + shift

    ratios = {"l.onnx": 0.70, "k.onnx": 0.9, **{f"m_{t:.3f}.onnx": curve(t) for t in (0.52, 0.49, 0.47, 0.45)}}
    fake, calls = _by_file(ratios)
    monkeypatch.setattr(bench, "timed", fake)

    def row_and_plans():
        scan = [{**_entry(t, curve(t) - shift - 0.70), "file": f"m_{t:.3f}.onnx"} for t in (0.52, 0.49, 0.47)]
        made: list[float] = []

        def new_plan(t: float) -> dict:
            made.append(t)
            return {"macs_target": t, "file": f"m_{t:.3f}.onnx"}

        row = {
            "latency_plan": {"file": "l.onnx", "latency": {"attempts": [], "measured_ratio": 0.7}},
            "macs_scan": scan,
            "kept_plan": {"file": "k.onnx"},
        }
        return row, made, new_plan

    row, made, new_plan = row_and_plans()
    bench.phase_time(row, {"path": "o.onnx"}, 1.0, new_plan, refine=1)
    assert made == [0.45] and row["macs_plan"]["macs_target"] == 0.45 and row["macs_plan_matched"] is True
    # a run of three per MACs plan (the refinement's added, the others not timed again), the kept plan's pair
    assert calls == [
        *(["o.onnx", f"m_{t:.3f}.onnx", "l.onnx"] for t in (0.49, 0.52, 0.47, 0.45)),
        ["o.onnx", "k.onnx"],
    ]
    fin = row["final"]
    assert [c["macs_target"] for c in fin["macs_candidates"]] == [0.49, 0.52, 0.47, 0.45]
    assert fin["macs_plan_ratio"] == pytest.approx(0.70) and fin["macs_index"] == 5 and fin["grouped"] is True
    assert fin["latency_plan_ratio"] == pytest.approx(0.70) and fin["apart"] == pytest.approx(0.0, abs=1e-12)
    assert fin["kept_index"] == 6 and fin["kept_plan_ratio"] == pytest.approx(0.9)
    # the cores busy while timing, machine and process (not timing: /proc/stat and process_time)
    busy, total = bench._machine_busy()
    assert 0 <= busy <= total and 0.0 <= fin["machine_busy_cores"] <= (os.cpu_count() or 1) + 1e-9
    assert fin["process_cores"] >= 0.0
    assert [m["model"] for m in fin["timings"]["models"]][:2] == ["o.onnx", "l.onnx"]
    (gaps,) = fin["earlier_runs_gaps"]
    assert dict(gaps) == pytest.approx({0.49: 0.04, 0.52: 0.07, 0.47: 0.02})
    # no refinement asked: the closest of the scan's plans, flagged as not matched
    row, made, new_plan = row_and_plans()
    calls.clear()
    bench.phase_time(row, {"path": "o.onnx"}, 1.0, new_plan, refine=0)
    assert made == [] and row["macs_plan"]["macs_target"] == 0.47 and row["macs_plan_matched"] is False
    assert row["final"]["earlier_runs_gaps"] == [] and len(calls) == 4
    assert row["final"]["apart"] == pytest.approx(0.02)


def test_extra_time_retimes_the_rows_asked_for(monkeypatch, tmp_path):
    # rows planned earlier (under load) get their together run again; the first one is kept
    import argparse

    import bench_latency_extra as extra_mod

    monkeypatch.setattr(bench, "timed", _by_file({"l.onnx": 0.80, "a.onnx": 0.805, "b.onnx": 0.78})[0])
    monkeypatch.setattr(extra_mod, "_options", lambda name, spec, work, n, reconstruct: ({}, "ev.npz"))

    def row(reconstruct: bool, target: float = 0.8) -> dict:
        scan = [{**_entry(0.6, 0.02), "file": "a.onnx"}, {**_entry(0.5, -0.03), "file": "b.onnx"}]
        return {
            "model": "digits",
            "target": target,
            "reconstruct": reconstruct,
            "loadavg": 7.0,
            "latency_plan": {"file": "l.onnx", "latency": {"attempts": [], "measured_ratio": 0.8}},
            "macs_scan": scan,
            "macs_plan": scan[0],
            "together": {"latency_plan_ratio": 0.83, "macs_plan_ratio": 0.85, "loadavg": 7.0},
        }

    rows = [row(False), row(True), row(True, target=0.9)]
    args = argparse.Namespace(
        phase="extra-time", extra_targets="0.8", extra_reconstruct="yes", samples=16, seconds=1.0, refine=1
    )
    extra_mod.extra_phase(args, ["digits"], tmp_path, rows, tmp_path / "extra.json")
    plain, rc, other = rows
    assert "retimed" in rc["together"] and "retimed" not in plain["together"] and "retimed" not in other["together"]
    assert rc["together_at_plan"] == {"latency_plan_ratio": 0.83, "macs_plan_ratio": 0.85, "loadavg": 7.0}
    # the final run's re-match: 0.805 is within 0.01 of 0.80, so no refinement, and no "final" left behind
    assert rc["together"]["latency_plan_ratio"] == 0.80 and rc["together"]["macs_plan_ratio"] == 0.805
    assert rc["macs_plan"]["macs_target"] == 0.6 and rc["macs_plan_matched"] is True and "final" not in rc
    assert rc["together"]["earlier_runs_gaps"] == []
    saved = json.loads((tmp_path / "extra.json").read_text())
    assert [r["together"].get("retimed") is not None for r in saved] == [False, True, False]


def test_extra_table_shows_a_refined_match_without_a_scan_run():
    from latency_bench_report import extra_table

    lat = {"latency": {"measured_ratio": 0.86}, "macs_ratio": 0.45, "fidelity": 0.9, "cosine": 0.95}
    lat["fidelity_metrics"] = {"out": {"metric": "top1", "value": 0.9}}
    refined = {"macs_target": 0.298, "macs_ratio": 0.29, "fidelity": 0.5, "cosine": 0.6}  # no "ab": no scan run
    tog = {"latency_plan_ratio": 0.895, "macs_plan_ratio": 0.896, "loadavg": 1.2, "retimed": "2026-11-30 16:50 UTC"}
    row = {"model": "m", "target": 0.9, "reconstruct": False, "loadavg": 5.3, "latency_plan": lat}
    lines = extra_table([{**row, "macs_plan": refined, "together": tog}])
    assert "| 0.298, refined, 0.896 | +0.001 |" in lines[-1] and lines[-1].endswith("| yes | 5.3, 1.2 |")
    assert "planned under the shared machine's load, then every pair timed *together* again" in lines[1]


def test_seed_rows_puts_a_recorded_benchmark_under_the_work_folders_state(tmp_path: Path) -> None:
    recorded = tmp_path / "latency.json"
    recorded.write_text(
        json.dumps(
            {"meta": {}, "rows": [{"model": "pplcnet", "v": 1}, {"model": "digits", "v": 1}], "extra": [{"e": 1}]}
        )
    )
    work = tmp_path / "work"
    work.mkdir()
    (work / "rows.json").write_text(json.dumps([{"model": "digits", "v": 2}]))
    # the heldout phase of no rows: only the seeding runs
    assert bench.main(["heldout", "--models", "", "--work", str(work), "--seed-rows", str(recorded)]) == 0
    rows = {r["model"]: r["v"] for r in json.loads((work / "rows.json").read_text())}
    assert rows == {"pplcnet": 1, "digits": 2}
    assert json.loads((work / "extra.json").read_text()) == [{"e": 1}]  # a later phase's report keeps it


def test_heldout_inputs_phase_makes_the_corpus_rows_inputs_ahead(tmp_path: Path, monkeypatch) -> None:
    import bench_latency_heldout

    calls: list[tuple[str, int, int]] = []

    def feeds(base: str, count: int, seed: int) -> dict:
        calls.append((base, count, seed))
        return {"x": np.full((count, 2), seed, np.float32)}

    monkeypatch.setattr(bench_latency_heldout, "_feeds", lambda: feeds)
    folder = tmp_path / "inputs"
    argv = ["heldout-inputs", "--models", "pplcnet,pplcnet+rc,yolo26n,digits", "--work", str(tmp_path / "w")]
    assert bench.main([*argv, "--heldout-inputs", str(folder), "--heldout", "40"]) == 0
    pp, yolo = (os.path.basename(bench.MODELS[m]["path"]) for m in ("pplcnet", "yolo26n"))
    assert calls == [(pp, 32, 3), (pp, 32, 4), (yolo, 32, 3), (yolo, 32, 4)]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{b}.32.{s}.npz" for b in (pp, yolo) for s in (3, 4))
    assert bench.main([*argv, "--heldout-inputs", str(folder), "--heldout", "40"]) == 0
    assert len(calls) == 4  # made once: read back the second time
    with pytest.raises(SystemExit):
        bench.main(argv)  # nowhere to keep them


def test_data_files_say_the_inputs_also_when_they_were_already_made(tmp_path: Path) -> None:
    # a second row of the same base (the + reconstruct row), or a re-run in the same work folder,
    # finds the .npz made: its spec said "inputs: " (empty) in the report's per-model section
    import bench_latency_models as models
    from latency_bench_report_models import row_inputs

    base = {"path": "/zoo/m.onnx", "input": "x", "shape": [1, 3, 4, 4], "kind": "zoo", "samples": 2}
    first, again = dict(base), {**base, "base": "m", "reconstruct": True}
    made = models.data_files("m", first, tmp_path, 2)
    assert models.data_files("m+rc", again, tmp_path, 2) == made
    note = "seeded standard-normal images (random-weight export)"
    assert first["inputs_note"] == again["inputs_note"] == note
    digits = models.model_spec("digits")
    models.data_files("digits", digits, tmp_path, 2)
    models.data_files("digits", digits, tmp_path, 2)
    assert digits["inputs_note"].startswith("digits calibration split")
    # rows recorded with the empty note: said from the spec in the report
    assert row_inputs({"model": "m+rc", "inputs_note": ""}, {"m": base}) == note
    assert row_inputs({"model": "m", "inputs_note": "as recorded"}, {"m": base}) == "as recorded"
    assert row_inputs({"model": "m"}, {"m": {"kind": "zoo"}}) == "not recorded"


def test_the_digits_row_is_timed_as_a_batch_of_digits_in_prune_and_in_the_final_run(monkeypatch, tmp_path):
    # a 0.1 ms model timed one input at a time measures its runtime's per-call cost: the digits
    # rows are planned (prune's table and A/B) and timed (scan, final run) as a batch of 64, at the
    # 0.7 of every other row; the other rows stay at batch 1
    import bench_latency_models as models
    from latency_bench_report_cells import row_label

    digits, pplcnet = models.model_spec("digits+rc"), models.model_spec("pplcnet")
    assert bench.settings(digits).batch == 64 and bench.settings(digits).precision == "f32"
    assert bench.settings(pplcnet) is bench.SETTINGS and bench.SETTINGS.batch == 1
    assert "target" not in digits  # the run's --target (0.7), as every other row
    seen: list = []

    class Stop(Exception):
        pass

    def fake_prune(path, criterion, **kw):
        seen.append(("prune", kw["latency"].batch, kw["latency_target"]))
        raise Stop

    def fake_measure(files, settings, **kw):
        seen.append(("timed", settings.batch, len(files)))
        raise Stop

    monkeypatch.setattr(bench.onnxprune, "prune", fake_prune)
    monkeypatch.setattr(bench, "measure_models", fake_measure)
    with pytest.raises(Stop):
        bench.phase_plan("digits+rc", digits, tmp_path, 0.7, 4, 1.0)
    with pytest.raises(Stop):
        bench.timed(["o.onnx", "m.onnx", "l.onnx"], digits, 1.0, rounds=20)
    with pytest.raises(Stop):
        bench.timed(["o.onnx", "m.onnx"], pplcnet, 1.0, rounds=20)
    assert seen == [("prune", 64, 0.7), ("timed", 64, 3), ("timed", 1, 2)]
    # the report names the batch where it is not 1 (read from the latency plan's recorded deployment)
    row = {"model": "digits+rc", "reconstruct": True, "latency_plan": {"latency": {"settings": {"batch": 64}}}}
    assert row_label(row) == "digits + reconstruct (batch 64)"
    assert row_label({"model": "pplcnet", "latency_plan": {"latency": {"settings": {"batch": 1}}}}) == "pplcnet"
    assert row_label({"model": "pplcnet"}) == "pplcnet"
