"""Building latency tables with a deterministic stand-in timer (nothing is timed)."""

from __future__ import annotations

import json
import math
import os

import onnx
import pytest

from onnxprune.errors import UsageError
from onnxprune.latency import LatencySettings, LatencyTable, UnitLatency, build_table, measure_ab, measurement_counts
from onnxprune.latency.cache import cache_path
from onnxprune.latency.measure import noise_note
from onnxprune.latency.sampling import interleave, summarize
from onnxprune.testing import GraphBuilder, StepTimer


def chain_model(path: str, widths=(64, 48), batch=None) -> str:
    """x -> conv(64)-BN-Relu -> conv(48)-Relu -> conv(10): two units, the last conv pinned."""
    b = GraphBuilder(opset=17, seed=5)
    y = b.input("x", [batch, 3, 8, 8])
    y = b.op("Relu", b.bn(b.conv(y, widths[0])))
    y = b.op("Relu", b.conv(y, widths[1]))
    b.output(b.conv(y, 10, k=1))
    onnx.save(b.build("chain"), path)
    return path


def tables(folder) -> list[str]:
    """The cached tables in a cache folder (not the index of model hashes)."""
    return [f for f in os.listdir(folder) if f != "sha256.json"]


def blocks(k: int, step: int = 16) -> int:
    return math.ceil(k / step)


@pytest.fixture()
def model(tmp_path):
    return chain_model(str(tmp_path / "chain.onnx"))


def test_measurement_counts_cover_the_width_and_a_step_cluster():
    counts, reach = measurement_counts(64, 63)
    assert reach == 32
    assert {64, 48, 32, 16}.issubset(counts)
    assert {33, 32, 31, 28, 24, 16}.issubset(counts)  # around 32: steps 1..32 tell apart
    counts, reach = measurement_counts(24, 23)
    assert reach == 16 and {17, 16, 15, 12, 8}.issubset(counts) and max(counts) == 24
    counts, reach = measurement_counts(12, 11)
    assert reach == 8 and {9, 8, 7, 4}.issubset(counts) and max(counts) == 12
    counts, reach = measurement_counts(64, 8)  # only 8 removable: nothing below 56
    assert min(counts) == 56 and reach == 4


def test_table_recovers_the_step_and_the_savings(model, tmp_path):
    timer = StepTimer(step=16, base=1e-3, per_block=1e-5)
    table = build_table(model, timer=timer, cache_dir=tmp_path / "cache", calibrate=True)
    assert timer.runs > 0
    assert len(table.units) == 2
    assert table.baseline == pytest.approx(timer.latency(onnx.load(model)), rel=1e-12)
    first, second = (table.units[n] for n in sorted(table.units, key=lambda n: -table.units[n].channels))
    assert (first.channels, second.channels) == (64, 48)
    assert first.step == 16 and second.step == 16
    # Unit 1's subgraph: conv1 (64 out) and conv2 (64 in); each started block of 16 costs 1e-5.
    for kept in range(min(k for k, _ in first.points), 65):
        assert first.saving(kept) == pytest.approx(2e-5 * (blocks(64) - blocks(kept)), abs=1e-12)
    for kept in range(min(k for k, _ in second.points), 49):
        assert second.saving(kept) == pytest.approx(2e-5 * (blocks(48) - blocks(kept)), abs=1e-12)
    # Calibration: the whole model with both units at half width, timed against the original.
    # Blocks of 16 (out + in per conv): original 5 + 7 + 4, half width 3 + 4 + 3.
    measured = (1e-3 + 10e-5) / (1e-3 + 16e-5)
    assert table.calibration["measured_ratio"] == pytest.approx(measured, rel=1e-12)
    raw = LatencyTable(table.key, table.baseline, table.units)
    predicted = raw.predicted_latency({first.unit: 32, second.unit: 24}) / table.baseline
    assert table.calibration["predicted_ratio"] == pytest.approx(predicted, rel=1e-12)
    assert table.scale == pytest.approx((1 - measured) / (1 - predicted), rel=1e-12)
    assert table.saving(first.unit, 49) == 0.0
    assert table.saving(first.unit, 48) == pytest.approx(table.scale * 2e-5, rel=1e-9)
    assert table.predicted_latency({first.unit: 32, second.unit: 24}) == pytest.approx(
        measured * table.baseline, rel=1e-9
    )
    # MACs for comparison: removing channels saves MACs, more for fewer kept
    macs = dict(first.macs_saved)
    assert macs[64] == 0.0 and 0 < macs[48] < macs[32] < 1
    # conv2 is shared (reads unit 1, writes unit 2): the partners' weights are its MACs shares
    macs1, macs2, macs3 = 64 * 3 * 9, 48 * 64 * 9, 10 * 48  # per output pixel
    assert first.partners == ((second.unit, pytest.approx(macs2 / (macs1 + macs2), rel=1e-12)),)
    assert second.partners == ((first.unit, pytest.approx(macs2 / (macs2 + macs3), rel=1e-12)),)
    assert table.key["precision"] == "f32" and table.key["runtime"] == "step-timer 16"
    assert len(table.key["model_sha256"]) == 64


def test_step_8_is_found_too(model, tmp_path):
    table = build_table(model, timer=StepTimer(step=8), cache_dir=tmp_path)
    assert {u.step for u in table.units.values()} == {8}


def test_cache_hit_times_nothing(model, tmp_path):
    first = build_table(model, timer=StepTimer(), cache_dir=tmp_path)
    again = StepTimer()
    second = build_table(model, timer=again, cache_dir=tmp_path)
    assert (again.loads, again.runs) == (0, 0)
    assert second.to_dict() == first.to_dict()
    assert second.cached and not first.cached
    stored = json.loads(open(cache_path(first.key, str(tmp_path / "latency")), encoding="utf-8").read())
    assert stored["key"] == dict(first.key)


def test_no_cache_measures_again(model, tmp_path):
    build_table(model, timer=StepTimer(), cache_dir=tmp_path)
    again = StepTimer()
    build_table(model, timer=again, cache_dir=tmp_path, cache=False)
    assert again.runs > 0


@pytest.mark.parametrize(
    "change", [{"threads": 2}, {"hint": "throughput"}, {"precision": "bf16"}, {"batch": 2}], ids=str
)
def test_key_changes_invalidate(tmp_path, change):
    path = chain_model(str(tmp_path / "dyn.onnx"))
    build_table(path, timer=StepTimer(), cache_dir=tmp_path)
    again = StepTimer()
    table = build_table(path, LatencySettings(**change), timer=again, cache_dir=tmp_path)
    assert again.runs > 0
    for k, v in change.items():
        assert table.key[k] == str(v)
    assert len(tables(tmp_path / "latency")) == 2


def test_model_change_invalidates(tmp_path):
    path = chain_model(str(tmp_path / "m.onnx"))
    build_table(path, timer=StepTimer(), cache_dir=tmp_path)
    chain_model(path, widths=(64, 32))
    again = StepTimer()
    table = build_table(path, timer=again, cache_dir=tmp_path)
    assert again.runs > 0 and sorted(u.channels for u in table.units.values()) == [32, 64]


def test_corrupt_cache_is_rebuilt_with_a_note(model, tmp_path):
    first = build_table(model, timer=StepTimer(), cache_dir=tmp_path)
    path = cache_path(first.key, str(tmp_path / "latency"))
    with open(path, "w") as f:
        f.write('{"format": "onnxprune-latency-table/1", "units": [')
    again = StepTimer()
    table = build_table(model, timer=again, cache_dir=tmp_path)
    assert again.runs > 0
    assert any("unreadable" in n and "rebuilt" in n for n in table.notes)
    assert table.units.keys() == first.units.keys()
    fresh = StepTimer()
    build_table(model, timer=fresh, cache_dir=tmp_path)  # the rebuilt file serves again
    assert fresh.runs == 0
    assert not [f for f in os.listdir(tmp_path / "latency") if ".tmp" in f]


def test_cache_dir_from_environment(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXPRUNE_CACHE_DIR", str(tmp_path / "env"))
    build_table(model, timer=StepTimer())
    assert len(tables(tmp_path / "env" / "latency")) == 1
    monkeypatch.delenv("ONNXPRUNE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    build_table(model, timer=StepTimer())
    assert len(tables(tmp_path / "xdg" / "onnxprune" / "latency")) == 1


def test_bad_input(tmp_path, model):
    with pytest.raises(UsageError, match="no such file"):
        build_table(str(tmp_path / "missing.onnx"), timer=StepTimer(), cache_dir=tmp_path)
    static = chain_model(str(tmp_path / "static.onnx"), batch=1)
    with pytest.raises(UsageError, match=r"static batch of 1; latency\.batch 4 needs a dynamic batch"):
        build_table(static, LatencySettings(batch=4), timer=StepTimer(), cache_dir=tmp_path)
    with open(model, "rb") as f:
        before = f.read()
    build_table(model, timer=StepTimer(), cache_dir=tmp_path)
    with open(model, "rb") as f:
        assert f.read() == before  # the input is never modified


def test_measure_ab_ratio_of_known_latencies(tmp_path):
    a = chain_model(str(tmp_path / "a.onnx"))
    b = chain_model(str(tmp_path / "b.onnx"), widths=(32, 16))
    timer = StepTimer()
    result = measure_ab(a, b, timer=timer, rounds=5, seconds=1e-3)
    ta, tb = timer.latency(onnx.load(a)), timer.latency(onnx.load(b))
    assert result.ratio == pytest.approx(tb / ta, rel=1e-12)
    assert result.ratio_p10 == result.ratio_p90 == result.ratio
    assert (result.original, result.candidate) == (pytest.approx(ta), pytest.approx(tb))
    assert result.rounds == 5 and result.precision == "f32" and result.conclusive
    assert result.to_dict()["settings"]["precision"] == "f32"
    with pytest.raises(UsageError, match="at least 3 rounds"):
        measure_ab(a, b, timer=timer, rounds=1)


def test_measure_models_times_several_against_the_first(tmp_path):
    from onnxprune.latency.ab import measure_models

    paths = [
        chain_model(str(tmp_path / "a.onnx")),
        chain_model(str(tmp_path / "b.onnx"), widths=(32, 16)),
        chain_model(str(tmp_path / "c.onnx"), widths=(16, 16)),
    ]
    timer = StepTimer()
    result = measure_models(paths, timer=timer, rounds=4, seconds=1e-3)
    lat = [timer.latency(onnx.load(p)) for p in paths]
    assert result.models == tuple(paths) and timer.loads == 3  # each compiled once
    assert result.ratio == pytest.approx((1.0, lat[1] / lat[0], lat[2] / lat[0]), rel=1e-12)
    assert lat[2] < lat[1] < lat[0]
    assert result.ratio_p10 == result.ratio_p90 == result.ratio
    assert result.latency == pytest.approx(tuple(lat)) and result.median == pytest.approx(tuple(lat))
    assert result.rounds == 4 and result.precision == ("f32",) * 3
    models = result.to_dict()["models"]
    assert [m["median_ratio"] for m in models] == pytest.approx([1.0, lat[1] / lat[0], lat[2] / lat[0]])
    # measure_ab is its two-model case
    ab = measure_ab(paths[0], paths[2], timer=timer, rounds=4, seconds=1e-3)
    assert ab.ratio == pytest.approx(result.ratio[2], rel=1e-12)
    with pytest.raises(UsageError, match="at least 2 models, got 1"):
        measure_models(paths[:1], timer=timer)
    with pytest.raises(UsageError, match=r"missing\.onnx: no such file"):
        measure_models([paths[0], str(tmp_path / "missing.onnx")], timer=timer)


def test_interleave_rotates_and_summary_takes_round_minima():
    order: list[int] = []

    class Recorder:
        precision = "f32"

        def __init__(self, i: int, t: float) -> None:
            self.i, self.t = i, t

        def run(self) -> float:
            order.append(self.i)
            return self.t

    times = interleave([Recorder(0, 1.0), Recorder(1, 2.0), Recorder(2, 3.0)], rounds=3, runs=2)
    assert order == [0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 0, 0, 2, 2, 0, 0, 1, 1]
    assert times[1] == [[2.0, 2.0]] * 3
    s = summarize([[5.0, 1.0, 9.0], [2.0, 8.0], [3.0, 3.5], [4.0], [100.0, 6.0]])
    assert (s.latency, s.rounds, s.runs) == (3.0, 5, 10)  # minima 1, 2, 3, 4, 6
    assert s.median == 4.5


def test_noise_note_only_when_rounds_spread_widely():
    quiet = UnitLatency("a", ("a",), 8, ((4, 1e-3), (8, 2e-3)), 1, spread=2e-4)
    busy = UnitLatency("b", ("b",), 8, ((4, 1e-3), (8, 2e-3)), 1, spread=1e-3)
    assert noise_note([quiet, quiet, busy]) is None
    note = noise_note([busy, busy, quiet])
    assert note is not None and "50%" in note and "--threads 1" in note
    assert noise_note([]) is None


def test_calibration_that_cannot_run_leaves_a_note_and_scale_1(model, tmp_path):
    class NoHalf(StepTimer):
        def load(self, m, input_shapes, source):
            if "half width" in source:
                raise UsageError(f"{source}: cannot compile")
            return super().load(m, input_shapes, source)

    table = build_table(model, timer=NoHalf(), cache_dir=tmp_path, calibrate=True)
    assert table.scale == 1.0 and table.calibration is None
    assert any(n.startswith("not calibrated: ") and "cannot compile" in n for n in table.notes)
    assert table.baseline == pytest.approx(StepTimer().latency(onnx.load(model)), rel=1e-12)


def test_calibration_scale_is_clamped_with_a_note(tmp_path):
    from onnxprune.latency.calibrate import calibrate

    model = chain_model(str(tmp_path / "m.onnx"))
    slower = onnx.load(chain_model(str(tmp_path / "big.onnx"), widths=(128, 96)))  # "half" slower than the original
    unit = UnitLatency("u", ("u",), 64, ((32, 1e-4), (64, 2e-4)), 1)
    cal = calibrate(model, slower, {"u": 32}, {"u": unit}, StepTimer(), {}, rounds=3, seconds=1e-3)
    assert cal.measured_ratio > 1 and cal.scale == 0.25
    assert any("clamped to [0.25, 4.0]" in n for n in cal.notes)


def test_model_hash_is_remembered_by_path_size_and_time(model, tmp_path):
    first = build_table(model, timer=StepTimer(), cache_dir=tmp_path)
    index = json.loads((tmp_path / "latency" / "sha256.json").read_text())
    assert index[os.path.abspath(model)][2] == first.key["model_sha256"]
    index[os.path.abspath(model)][2] = "f" * 64  # the remembered hash is what the key uses
    (tmp_path / "latency" / "sha256.json").write_text(json.dumps(index))
    again = StepTimer()
    assert build_table(model, timer=again, cache_dir=tmp_path).key["model_sha256"] == "f" * 64
    assert again.runs > 0
    (tmp_path / "latency" / "sha256.json").write_text("not json")  # unreadable: hashed again
    fresh = StepTimer()
    assert build_table(model, timer=fresh, cache_dir=tmp_path).key["model_sha256"] == first.key["model_sha256"]
    assert fresh.runs == 0


def test_uncalibrated_table_keeps_the_subgraph_savings(model, tmp_path):
    timer = StepTimer()
    table = build_table(model, timer=timer, cache_dir=tmp_path, calibrate=False)
    first = max(table.units.values(), key=lambda u: u.channels)
    assert table.scale == 1.0 and table.calibration is None and table.key["calibrated"] == "no"
    assert table.saving(first.unit, 48) == pytest.approx(2e-5, rel=1e-9)
    assert table.baseline == pytest.approx(timer.latency(onnx.load(model)), rel=1e-12)
    again = StepTimer()
    calibrated = build_table(model, timer=again, cache_dir=tmp_path, calibrate=True)
    assert calibrated.key.get("calibrated") is None and again.runs > 0 and calibrated.scale != 1.0
    # by default an additive timer (the StepTimer) is not calibrated: its summed savings are exact
    assert build_table(model, timer=StepTimer(), cache_dir=tmp_path / "d").scale == 1.0
