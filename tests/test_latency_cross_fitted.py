"""With --latency-target, a fidelity floor and --reconstruct, the planner's floor judges plans
cross-fitted (latency.md: as the --min-fidelity search does); the delivered model is refitted on
all the calibration samples, so the report shows the cross-fitted figure beside the in-sample
one, as the --min-fidelity search's report does. A fake timer: nothing is timed."""

from __future__ import annotations

from pathlib import Path

from test_latency_recovered import _prune
from test_sensitivity import _calib

from onnxprune.cli_text import generalisation_lines


def test_the_latency_floor_reports_the_cross_fitted_value_it_judged(tmp_path: Path) -> None:
    calib = _calib(tmp_path, (3, 6, 6), n=32)
    rec = _prune(calib, reconstruct=True).to_dict()
    assert rec["latency"]["limited_by_constraint"] and rec["channels_removed"] == 1
    g = rec["generalisation"]
    cross = g["cross_fitted"]
    # the floor's own figure for the delivered plan: the cross-fitted fidelity, exactly
    assert cross["fidelity"] == rec["latency"]["constraint_value"]
    assert cross["samples"] == g["calibration"]["samples"] == 24
    assert "fidelity cross-fitted (what the search judged)" in "\n".join(generalisation_lines(g))


def test_no_cross_fitted_value_without_recovery(tmp_path: Path) -> None:
    calib = _calib(tmp_path, (3, 6, 6), n=32)
    plain = _prune(calib).to_dict()
    assert "cross_fitted" not in (plain.get("generalisation") or {})


def test_a_sequential_refit_judged_below_the_latency_floor_is_not_delivered(tmp_path: Path, monkeypatch) -> None:
    """--reconstruct-from pruned: the floor's trials cap the sequential levels; the chosen plan is
    judged again with every level (decide.final_refit). Made to judge below the floor here, the
    result gets the trials' refit, the plan says so and the report shows the trials' judgement."""
    from dataclasses import replace

    from onnxprune.reconstruction_trials import ReconstructedTrials

    calib = _calib(tmp_path, (3, 6, 6), n=32)
    want = _prune(calib, reconstruct=True, reconstruct_from="pruned").to_dict()
    real = ReconstructedTrials.final_judged
    asked: list[frozenset[int]] = []

    def below(self, groups, *args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(frozenset(groups))
        judged = real(self, groups, *args, **kwargs)
        return None if judged is None else replace(judged, value=0.5)

    monkeypatch.setattr(ReconstructedTrials, "final_judged", below)
    rec = _prune(calib, reconstruct=True, reconstruct_from="pruned").to_dict()
    assert len(asked) == 1 and rec["channels_removed"] == want["channels_removed"] == 1
    (note,) = [n for n in rec["notes"] if "sequential refit of every level judged 0.5 (cross-fitted)" in n]
    assert "below the fidelity floor 0.9999" in note and "the shallowest 8 levels" in note
    assert rec["generalisation"]["cross_fitted"]["fidelity"] == rec["latency"]["constraint_value"]
    assert "sequential refit of every level" not in " ".join(want["notes"])


def test_with_a_data_criterion_the_latency_floor_judges_each_half_by_the_others_choice(
    tmp_path: Path, monkeypatch
) -> None:
    """--criterion contribution chooses the channels on the calibration samples: judged on the
    same samples a plan looks better than elsewhere. The order's evaluations and the floor judge
    each half by the channels the criterion chose on the other half (SelectionTrials, as the
    --min-fidelity search does); the report shows that figure beside the in-sample one."""
    from onnxprune.selection_trials import SCORED_BY, SelectionTrials

    calls: list[frozenset[int]] = []
    real = SelectionTrials.judged

    def counted(self, groups, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(frozenset(groups))
        return real(self, groups, *args, **kwargs)

    monkeypatch.setattr(SelectionTrials, "judged", counted)
    calib = _calib(tmp_path, (3, 6, 6), n=32)
    rep = _prune(calib, "contribution").to_dict()
    assert calls and rep["latency"]["order"]["evaluations"] > 0
    cross = rep["generalisation"]["cross_fitted"]
    assert cross["scored_by"] == SCORED_BY
    assert cross["samples"] == rep["generalisation"]["calibration"]["samples"] == 24
    assert cross["fidelity"] == rep["latency"]["constraint_value"]
    calls.clear()
    plain = _prune(calib).to_dict()  # l2: the masked trials judge, in-sample (nothing was chosen on them)
    assert calls == [] and "cross_fitted" not in (plain.get("generalisation") or {})
