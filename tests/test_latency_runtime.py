"""The real timers on a tiny model: structure only (what is timed is never asserted)."""

from __future__ import annotations

import pytest
from test_latency_measure import chain_model

from onnxprune.latency import LatencySettings, RuntimeTimer, build_table, measure_ab


@pytest.mark.parametrize(
    "settings",
    [LatencySettings(backend="onnxruntime", threads=1), LatencySettings(threads=1), LatencySettings(hint="throughput")],
    ids=["onnxruntime", "openvino-latency", "openvino-throughput"],
)
def test_runtime_timer_runs_models(tmp_path, settings):
    model = chain_model(str(tmp_path / "m.onnx"))
    with RuntimeTimer(settings) as timer:
        timed = timer.load(model, {"x": [1, 3, 8, 8]}, model)
        assert timed.precision == "f32"
        assert all(timed.run() > 0 for _ in range(3))
        assert timer.runtime.startswith(settings.backend + " ")


def test_build_table_with_onnxruntime_has_every_unit(tmp_path):
    model = chain_model(str(tmp_path / "m.onnx"))
    settings = LatencySettings(backend="onnxruntime", threads=1)
    table = build_table(model, settings, cache=False, rounds=2, seconds_per_unit=0.01)
    assert sorted(u.channels for u in table.units.values()) == [48, 64]
    assert table.baseline > 0 and all("\n" not in n for n in table.notes)  # timing may be noisy: a note, no more
    for u in table.units.values():
        assert len(u.points) >= 8 and u.points[-1][0] == u.channels
        assert all(t > 0 for _, t in u.points)


def test_measure_ab_with_openvino_reports_both_sides(tmp_path):
    a = chain_model(str(tmp_path / "a.onnx"))
    b = chain_model(str(tmp_path / "b.onnx"), widths=(16, 8))
    result = measure_ab(a, b, LatencySettings(threads=1), rounds=3, seconds=0.05)
    assert result.precision == "f32" and result.rounds == 3
    assert result.ratio_p10 <= result.ratio <= result.ratio_p90
    assert result.original > 0 and result.candidate > 0
