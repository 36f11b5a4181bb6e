"""The latency table's data types and fit (pure; no timing)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from onnxprune.errors import UsageError
from onnxprune.latency import LatencySettings, LatencyTable, UnitLatency, detect_step
from onnxprune.latency.fit import block_end, isotonic


def step_latency(kept: int, step: int, base: float = 1e-3, per_block: float = 2e-5) -> float:
    return base + per_block * math.ceil(kept / step)


def probes(channels: int, anchor: int) -> list[int]:
    fractions = [channels, 3 * channels // 4, channels // 2, channels // 4]
    near = [anchor + 1, anchor, anchor - 1, anchor - 4, anchor - 8, anchor - 16, anchor - 32]
    return sorted({k for k in fractions + near if 1 <= k <= channels})


@pytest.mark.parametrize("step", [1, 4, 8, 16, 32])
def test_detect_step_recovers_a_known_step(step):
    points = [(k, step_latency(k, step)) for k in probes(192, 128)]
    assert detect_step(points, 192) == step


def test_detect_step_with_noise_below_the_jump():
    rng = np.random.default_rng(0)
    points = [(k, step_latency(k, 16) + rng.normal(0, 5e-7)) for k in probes(256, 128)]
    assert detect_step(points, 256, noise=1e-6) == 16


def test_detect_step_flat_within_noise_is_none():
    points = [(k, 1e-3 + 1e-7 * (k % 3)) for k in probes(128, 64)]
    assert detect_step(points, 128, noise=1e-6) is None
    assert detect_step([(64, 1e-3), (128, 2e-3)], 128) is None  # two counts cannot tell


def test_block_end_and_isotonic():
    assert [block_end(k, 16, 100) for k in (1, 16, 17, 96, 97, 100)] == [16, 16, 32, 96, 100, 100]
    assert block_end(5, 1, 100) == 5
    assert isotonic([1.0, 3.0, 2.0, 4.0]) == [1.0, 2.5, 2.5, 4.0]
    assert isotonic([3.0, 2.0, 1.0]) == [2.0, 2.0, 2.0]


def test_unit_predicts_the_step_function():
    channels, step = 192, 16
    points = tuple((k, step_latency(k, step)) for k in probes(channels, 128))
    unit = UnitLatency("conv1", ("conv1", "conv2"), channels, points, detect_step(points, channels))
    assert unit.step == 16
    for kept in (1, 17, 50, 96, 97, 111, 112, 128, 129, 160, 192):
        if kept >= min(k for k, _ in points):  # flat below the lowest measured count
            assert unit.predict(kept) == pytest.approx(step_latency(kept, step), rel=1e-9, abs=1e-12)
    assert unit.saving(192) == 0.0
    assert unit.saving(96) == pytest.approx(step_latency(192, 16) - step_latency(96, 16), rel=1e-9)
    # monotone in kept, and flat inside a block
    preds = [unit.predict(k) for k in range(1, channels + 1)]
    assert all(a <= b for a, b in zip(preds, preds[1:]))
    assert unit.predict(113) == unit.predict(128)


def test_unit_curve_is_monotone_despite_noisy_points():
    points = ((16, 1.0e-3), (32, 0.9e-3), (48, 1.2e-3), (64, 1.3e-3))
    unit = UnitLatency("u", ("u",), 64, points, 1)
    assert unit.predict(16) == pytest.approx(0.95e-3)
    assert unit.predict(32) == pytest.approx(0.95e-3)
    assert unit.predict(40) == pytest.approx(1.075e-3)
    assert unit.saving(8) == pytest.approx(1.3e-3 - 0.95e-3)


def test_unit_refuses_counts_outside_its_width():
    with pytest.raises(ValueError, match="outside"):
        UnitLatency("u", ("u",), 8, ((9, 1.0),), None)
    with pytest.raises(ValueError, match="no measured"):
        UnitLatency("u", ("u",), 8, (), None)


def _table() -> LatencyTable:
    a = UnitLatency("a", ("a",), 64, ((16, 1e-4), (32, 2e-4), (64, 4e-4)), 16, ((16, 0.3), (32, 0.2), (64, 0.0)))
    b = UnitLatency("b", ("b", "c"), 32, ((8, 1e-4), (32, 1e-4)), None, spread=2e-6)
    key = {"cpu": "AMD EPYC", "runtime": "openvino 2026.4", "precision": "f32", "model_sha256": "ab" * 32}
    return LatencyTable(key, 1e-3, {"a": a, "b": b}, LatencySettings(), seconds=3.5, notes=("n",))


def test_table_saving_and_prediction():
    t = _table()
    assert t.saving("a", 32) == pytest.approx(2e-4)
    assert t.saving("b", 8) == 0.0
    assert t.predicted_latency({"a": 16, "b": 8}) == pytest.approx(1e-3 - 3e-4)
    with pytest.raises(UsageError, match="no unit 'z'"):
        t.saving("z", 1)


def test_table_json_round_trip():
    t = _table()
    back = LatencyTable.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back.to_dict() == t.to_dict()
    assert back.units["a"].predict(20) == t.units["a"].predict(20)
    assert back.units["b"].spread == 2e-6
    with pytest.raises(UsageError, match="not an onnxprune latency table"):
        LatencyTable.from_dict({"format": "x"})
    bad = t.to_dict()
    del bad["units"][0]["points"]
    with pytest.raises(UsageError, match="malformed latency table"):
        LatencyTable.from_dict(bad)


def test_settings_validate():
    assert LatencySettings().precision == "f32"
    assert LatencySettings.from_dict(LatencySettings(batch=4, threads=2).to_dict()) == LatencySettings(
        batch=4, threads=2
    )
    for bad, msg in [
        ({"backend": "tvm"}, "unknown backend"),
        ({"batch": 0}, "batch"),
        ({"threads": 0}, "threads"),
        ({"hint": "fast"}, "unknown hint"),
        ({"precision": "int4"}, "unknown precision"),
        ({"backend": "onnxruntime", "precision": "bf16"}, "onnxruntime"),
        ({"device": "GPU"}, "only CPU"),
    ]:
        with pytest.raises(UsageError, match=msg):
            LatencySettings(**bad)


def test_predicted_latency_corrects_shared_layers_exactly_for_bilinear_costs():
    # conv1 (3 -> a), conv2 (a -> b), conv3 (b -> 10): latency in proportion to MACs
    a, b = 64, 48
    d, c, e = 5e-6, 1e-7, 2e-6  # conv1 per output, conv2 per (in x out), conv3 per input
    base = 1e-3

    def true(ka: int, kb: int) -> float:
        return base + d * ka + c * ka * kb + e * kb

    ua = UnitLatency(
        "A", ("conv1",), a, tuple((k, d * k + c * k * b) for k in (16, 32, 48, 64)), 1,
        partners=(("B", c * a * b / (d * a + c * a * b)),),
    )  # fmt: skip
    ub = UnitLatency(
        "B", ("conv2",), b, tuple((k, c * a * k + e * k) for k in (12, 24, 36, 48)), 1,
        partners=(("A", c * a * b / (c * a * b + e * b)),),
    )  # fmt: skip
    table = LatencyTable({"model_sha256": "0"}, true(a, b), {"A": ua, "B": ub})
    for ka, kb in [(32, 24), (16, 48), (48, 12), (20, 30)]:
        assert table.predicted_latency({"A": ka, "B": kb}) == pytest.approx(true(ka, kb), rel=1e-12)
    # summing the two marginal savings would count the corner twice
    naive = table.baseline - table.saving("A", 32) - table.saving("B", 24)
    assert naive < true(32, 24) - 1e-5
    assert table.saving_with("B", 24, {"A": 32}) == pytest.approx(true(32, 48) - true(32, 24), rel=1e-12)
    back = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert back.predicted_latency({"A": 20, "B": 30}) == table.predicted_latency({"A": 20, "B": 30})


def test_the_planners_predicted_ratio_is_the_tables_for_units_that_share_layers():
    # three_unit_chain: conv1 (3 -> a), conv2 (a -> b), conv3 (b -> c), conv4 (c -> 4); latency in
    # proportion to MACs, so the table's shared-layer correction is exact. The planner's ratio
    # summed the units' savings (the corners of conv2 and conv3 counted twice): at aim 0.45 it
    # stopped at a plan it predicted 0.449 that the table (and the true latency) put at 0.538.
    from latency_helpers import three_unit_chain

    import onnxprune
    from onnxprune.config import PruneConfig
    from onnxprune.latency.moves import move_space
    from onnxprune.latency.planner import plan_for_latency
    from onnxprune.sensitivity_analysis import find_units

    analysis = onnxprune.analyze(three_unit_chain())
    scores = {g.id: 1.0 + 0.01 * g.id for g in analysis.groups}
    units = find_units(analysis, scores)
    a, b, c = (u.name for u in units)
    n, base = 32, 1e-3
    w = {1: 2e-6, 2: 1e-6, 3: 1e-6, 4: 4e-6}  # seconds per MAC-unit of conv1..conv4

    def true(ka: int, kb: int, kc: int) -> float:
        return base + w[1] * 3 * ka + w[2] * ka * kb + w[3] * kb * kc + w[4] * kc * 4

    full = true(n, n, n)
    s1, s2, s3, s4 = w[1] * 3 * n, w[2] * n * n, w[3] * n * n, w[4] * n * 4  # each layer's full cost
    ks = (8, 16, 24, 32)
    ua = UnitLatency(a, ("conv1",), n, tuple((k, true(k, n, n)) for k in ks), 1, partners=((b, s2 / (s1 + s2)),))
    ub = UnitLatency(
        b, ("conv2",), n, tuple((k, true(n, k, n)) for k in ks), 1, partners=((a, s2 / (s2 + s3)), (c, s3 / (s2 + s3)))
    )
    uc = UnitLatency(c, ("conv3",), n, tuple((k, true(n, n, k)) for k in ks), 1, partners=((b, s3 / (s3 + s4)),))
    table = LatencyTable({"model_sha256": "0"}, full, {a: ua, b: ub, c: uc})
    space = move_space(analysis, PruneConfig(ratio=0.1), units, table, scores)
    at = {a: 16, b: 16, c: 16}
    assert space.predicted(at) == pytest.approx(true(16, 16, 16) / full, rel=1e-12)
    naive = 1 - sum(table.saving(u, k) for u, k in at.items()) / full
    assert space.predicted(at) - naive > 0.05  # where the sum went wrong
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim=0.45)
    kept = {ch.unit: ch.kept for ch in lp.units}
    assert min(kept.values()) < n and sorted(kept.values())[1] < n  # at least two units shrunk together
    assert lp.predicted_ratio == pytest.approx(table.predicted_latency(kept) / full, rel=1e-12)
    assert lp.predicted_ratio == pytest.approx(true(kept[a], kept[b], kept[c]) / full, rel=1e-12)
    assert lp.predicted_ratio <= 0.45 + 1e-9
