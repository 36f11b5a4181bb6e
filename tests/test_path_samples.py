"""quantized.PathSamples (5d5269e): one path's runs reduced to what the rounding rule judges.
A sample whose shapes differ is an infinite diff (the path fails) and leaves the scale alone."""

from __future__ import annotations

import numpy as np

from onnxprune.quantized import FLIP_SHARE, PathSamples, _judged

F = np.float32


def _limit(_name: str, scale: float) -> float:
    return 1e-3 * scale


def test_a_shape_mismatch_is_an_infinite_diff_and_fails_the_path() -> None:
    p = PathSamples("cpu", ["y", "z"])
    p.add({"y": np.array([2.0, -4.0], F), "z": np.zeros(2, F)}, {"y": np.array([2.0, -4.001], F), "z": np.zeros(2, F)})
    p.add({"y": np.array([8.0, 1.0], F), "z": np.ones(2, F)}, {"y": np.array([8.0], F), "z": np.ones(2, F)})
    assert p.samples == 2
    assert p.diffs["y"][0] == np.float64(F(-4.0)) - np.float64(F(-4.001)) and p.diffs["y"][1] == np.inf
    assert p.scales == {"y": 4.0, "z": 1.0}  # the mismatched sample's 8.0 is not its scale
    check = _judged(p, _limit)
    assert not check.passed and check.worst_output == "y" and check.max_abs_diff == np.inf
    assert check.samples == 2 and check.limit == 1e-3 * 4.0


def test_flips_within_the_share_pass_and_report_their_limit() -> None:
    n = 8
    allowed = max(1, int(FLIP_SHARE * n))
    p = PathSamples("cpu", ["y"])
    for i in range(n):
        ref = np.array([10.0, -2.0], F)
        got = ref + (F(0.05) if i < allowed else F(0.0))  # past 1e-3 x 10, within 0.02 x 10
        p.add({"y": ref, "extra": ref}, {"y": got, "extra": ref * 2})  # names not judged are ignored
    check = _judged(p, _limit)
    assert check.passed and check.flipped_samples == allowed and check.limit == 1e-3 * 10.0
    p.add({"y": np.array([10.0, -2.0], F)}, {"y": np.array([10.05, -2.0], F)})  # one flip more than allowed
    more = _judged(p, _limit)
    assert more.flipped_samples == allowed + 1 and more.samples == n + 1
    assert more.passed is (allowed + 1 <= max(1, int(FLIP_SHARE * (n + 1))))
