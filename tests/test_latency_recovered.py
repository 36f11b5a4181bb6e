"""With --reconstruct, the latency planner judges combined plans as the user gets them: the
order's scores and the --min-fidelity floor on the recovered (cross-fitted) model, not the
masked one. A fake timer: nothing is timed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_sensitivity import _calib, _redundant_channel_model

import onnxprune
from onnxprune.reconstruction_trials import ReconstructedTrials
from onnxprune.testing import StepTimer


def test_reconstructed_trials_judged_is_what_fidelity_says() -> None:
    model = _redundant_channel_model()
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 6, 6)).astype(np.float32)} for i in range(8)]
    analysis = onnxprune.analyze(model)
    trials = ReconstructedTrials(model, analysis, feeds)
    lossy = {g.id for g in analysis.groups if not g.pinned}  # every channel of the first conv
    for groups in (set(), {max(lossy)}, lossy):
        j = trials.judged(groups, None)
        assert j.value == trials.fidelity(groups, None, search=True)
        assert j.pooled == pytest.approx(trials.fidelity(groups, None), abs=1e-12)
        assert j.cosine is not None and -1.0 <= j.cosine <= 1.0
    assert trials.judged(set(), None).cosine == pytest.approx(1.0, abs=1e-6)
    assert trials.judged(lossy, None).cosine < 0.99


def _prune(calib: str, **options):
    return onnxprune.prune(
        _redundant_channel_model(),
        "l2",
        latency_target=0.9,
        min_fidelity=0.9999,
        timer=StepTimer(step=1, base=1e-4, per_block=1e-5),
        calibration=calib,
        compensation="none",
        **options,
    ).report


def test_the_fidelity_floor_is_judged_on_the_recovered_model(tmp_path: Path, monkeypatch) -> None:
    # channel 3 is half of channel 1: removing it loses fidelity masked, none once its reader
    # is refitted; so with --reconstruct it goes, and only it (the others are not redundant)
    calib = _calib(tmp_path, (3, 6, 6), n=32)
    plain = _prune(calib)
    assert plain.channels_removed == 0 and plain.latency["limited_by_constraint"]
    calls: list[frozenset[int]] = []
    judged = ReconstructedTrials.judged

    def counted(self, groups, *args, **kwargs):
        calls.append(frozenset(groups))
        return judged(self, groups, *args, **kwargs)

    monkeypatch.setattr(ReconstructedTrials, "judged", counted)
    rec = _prune(calib, reconstruct=True)
    assert rec.channels_removed == 1 and rec.layers[0].channels_after == 3
    assert rec.latency["constraint_value"] >= 0.9999 and rec.latency["limited_by_constraint"]
    # the order's evaluations and the floor's were the recovered model's
    assert rec.latency["order"]["evaluations"] > 0 and len(calls) >= rec.latency["order"]["evaluations"]
    calls.clear()
    _prune(calib)
    assert calls == []
