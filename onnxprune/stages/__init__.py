"""The stages of a pruning run, each a function with a typed, frozen result; ``api.prune`` is
their composition:

    load -> analyse -> calibrate -> score -> plan -> compensate -> apply -> check -> verify
         -> recover -> measure -> write -> report

``prepare`` holds the first three (and ``Run``, what every stage reads), ``decide`` scoring,
planning and compensation (the fidelity budget's trial builders, the MACs and compensation
values they share with it in ``trials``), ``deliver`` everything after the surgery; ``apply``
is the public ``api.apply``. Memory on big models shaped them: the weights the analysis reads stay for the
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
    validator,
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
    validated,
    verification_feeds,
    verify,
    write,
)
from .prepare import (
    CalibrationData,
    Feeds,
    LoadedModel,
    Run,
    analyse,
    calibrate,
    check_metric_outputs,
    load,
    metric_errors_named,
    with_data_shapes,
)

__all__ = [
    "CalibrationData",
    "Compensation",
    "Feeds",
    "LoadedModel",
    "Measured",
    "Original",
    "Planned",
    "Recovered",
    "Run",
    "SensitivityTrials",
    "Verified",
    "analyse",
    "budget_plan",
    "calibrate",
    "check",
    "check_budget",
    "check_metric_outputs",
    "compensate",
    "estimates",
    "layer_scores",
    "load",
    "may_consume",
    "measure",
    "measure_original",
    "metric_errors_named",
    "plan",
    "recover",
    "report",
    "runnable",
    "score",
    "sensitivity_trials",
    "staging",
    "validated",
    "validator",
    "verification_feeds",
    "verify",
    "with_data_shapes",
    "write",
]
