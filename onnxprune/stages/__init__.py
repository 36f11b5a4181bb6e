"""The stages of a pruning run, each a function with a typed, frozen result; ``api.prune`` is
their composition:

    load -> analyse -> calibrate -> score -> plan -> compensate -> apply -> check -> verify
         -> recover -> measure -> write -> report

``prepare`` holds the first three (and ``Run``, what every stage reads), ``decide`` scoring,
planning and compensation, ``deliver`` everything after the surgery; ``apply`` is the public
``api.apply``. Memory on big models shaped them: the weights the analysis reads stay for the
surgery and are dropped after it (``LoadedModel.after_surgery``); the pruned model's big new
weights stay arrays until written (``saving.DeferredModel``); with an output, the file verified
is the file written (``staging``).
"""

from __future__ import annotations

from .decide import (
    Compensation,
    Planned,
    SensitivityTrials,
    budget_plan,
    check_budget,
    compensate,
    estimates,
    layer_scores,
    plan,
    score,
    sensitivity_trials,
)
from .deliver import (
    Measured,
    Original,
    Recovered,
    Verified,
    check,
    may_consume,
    measure,
    measure_original,
    recover,
    report,
    runnable,
    staging,
    verification_feeds,
    verify,
    write,
)
from .prepare import CalibrationData, Feeds, LoadedModel, Run, analyse, calibrate, load, with_data_shapes

__all__ = [
    "Run", "LoadedModel", "CalibrationData", "Feeds", "Planned", "Compensation", "SensitivityTrials", "Original", "Verified",
    "Recovered", "Measured",
    "load", "with_data_shapes", "analyse", "calibrate", "score", "plan", "compensate", "measure_original", "may_consume", "check", "staging",
    "verify", "recover", "measure", "write", "report",
    "check_budget", "layer_scores", "budget_plan", "estimates", "sensitivity_trials", "runnable", "verification_feeds",
]
