"""The stages before any decision: load the model, analyse its channels, read the calibration
samples; and what every stage reads (``Run``)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ParamSpec, TypeVar

import numpy as np
import onnx

from ..analysis import ChannelAnalysis
from ..analysis import analyze as _analyze
from ..config import PruneConfig
from ..criteria import CriterionRegistry
from ..criteria.activations import ActivationStats, sink_statistics
from ..errors import UsageError
from ..layer_names import check_layers_named
from ..loading import load_model
from ..params import InitializerCache
from ..rules import RuleRegistry
from ..shapes import data_input_shapes

__all__ = [
    "CalibrationData",
    "Feeds",
    "LoadedModel",
    "Run",
    "analyse",
    "calibrate",
    "check_metric_outputs",
    "load",
    "metric_errors_named",
    "with_data_shapes",
]

Feeds = Sequence[Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Run:
    """What every stage of one run reads: the options, the two registries, the progress
    callback, and the timer latency is measured with (None: the runtime's clock; tests pass a
    fake one)."""

    config: PruneConfig
    registry: RuleRegistry
    criteria: CriterionRegistry
    progress: Callable[[str, int, int], None] | None = None
    timer: object | None = None

    def progress_of(self, stage: str) -> Callable[[int, int], None] | None:
        """The progress callback of one stage (None when nobody listens)."""
        progress = self.progress
        return None if progress is None else (lambda done, total: progress(stage, done, total))


@dataclass(frozen=True)
class LoadedModel:
    """The loaded model with a name for messages (its path or '<ModelProto>'), its size on disk
    (None for a ModelProto) and the cache its weights are read through, shared by the analysis
    and the surgery (views of the file's bytes where it can). ``proto`` is a copy of the caller's
    model, never the caller's own; a surgery that consumes it builds the pruned model in it."""

    proto: onnx.ModelProto = field(repr=False)
    source: str
    size: int | None
    initializers: InitializerCache | None = field(default=None, repr=False, compare=False)

    @property
    def runnable(self) -> onnx.ModelProto | str:
        """What onnxruntime is given for the original: its file when there is one (nothing
        encoded in memory), else the model."""
        return self.source if os.path.isfile(self.source) else self.proto

    def after_surgery(self) -> LoadedModel:
        """The same model without its weight cache: after the surgery nothing reads it, and it
        holds the whole file's bytes."""
        return replace(self, initializers=None)


@dataclass(frozen=True)
class CalibrationData:
    """Calibration samples (statistics, sensitivity, reconstruction), held-out evaluation
    samples (fidelity), how they were chosen, and the activation statistics when needed."""

    calibration: Feeds | None = None
    evaluation: Feeds | None = None
    note: str = ""
    stats: ActivationStats | None = None


def load(
    model: onnx.ModelProto | str | os.PathLike[str], progress: Callable[[int, int], None] | None = None
) -> LoadedModel:
    """Load and check a model (a path, or a ModelProto that is copied). ``progress`` hears one
    step (0 then 1 of 1): a big model's load and check take a while with nothing else shown."""
    if progress:
        progress(0, 1)
    proto, source, size, initializers = load_model(model)
    if progress:
        progress(1, 1)
    return LoadedModel(proto, source, size, initializers)


def check_metric_outputs(proto: onnx.ModelProto, choices: Mapping[str, str], source: str) -> None:
    """UsageError when ``--fidelity-metric`` (``fidelity_metrics=``) names an output the model
    does not have: a typo would otherwise leave that output to the detected metric unnoticed."""
    outputs = [o.name for o in proto.graph.output]
    for name in choices:
        if name != "*" and name not in outputs:
            raise UsageError(f"{source}: --fidelity-metric names {name!r}, but the model's outputs are {outputs}")


P = ParamSpec("P")
R = TypeVar("R")


def metric_errors_named(func: Callable[P, R]) -> Callable[P, R]:
    """``func`` (an entry point whose first argument is the model, a path or a ModelProto) with
    a chosen fidelity metric's 'cannot read' error prefixed by the model's file (``source=``
    when given, '<model>' for one in memory, as load names it): the metric meets the output
    deep inside a run, where the file is not known."""

    @functools.wraps(func)
    def named(*args: P.args, **kwargs: P.kwargs) -> R:
        from ..fidelity_metrics import MetricCannotRead

        try:
            return func(*args, **kwargs)
        except MetricCannotRead as exc:
            model = kwargs.get("source") or (args[0] if args else kwargs.get("model"))
            source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else "<model>"
            raise UsageError(f"{source}: {exc}") from None

    return named


def with_data_shapes(loaded: LoadedModel, run: Run) -> Run:
    """The run with static input shapes taken from the data (``--inputs``, a calibration
    .npz) for inputs with dynamic dimensions the user gave no shape for, so the analysis, the
    MACs and the verification all see the shapes the data has."""
    config = run.config
    from ..verification_inputs import CALIBRATION_INPUTS, check_inputs_file

    check_inputs_file(config.verification_inputs)  # before any work, in the words the CLI prints
    check_inputs_file(config.calibration, CALIBRATION_INPUTS)
    shapes = data_input_shapes(loaded.proto, (config.verification_inputs, config.calibration), config.input_shapes)
    if shapes == dict(config.input_shapes):
        return run
    return replace(run, config=replace(config, input_shapes=shapes))


def analyse(loaded: LoadedModel, run: Run) -> ChannelAnalysis:
    """The channel groups; the weights read stay in ``loaded.initializers`` for the surgery.
    An --exclude pattern or --config entry that matches no layer is refused here. The run's
    progress hears an "analysis" step (0 then 1 of 1; shape inference of a big model takes a
    while before the first data-driven stage shows)."""
    progress = run.progress_of("analysis")
    if progress:
        progress(0, 1)
    analysis = _analyze(
        loaded.proto,
        input_shapes=run.config.input_shapes,
        registry=run.registry,
        source=loaded.source,
        initializers=loaded.initializers,
    )
    check_layers_named(analysis, run.config, loaded.source)
    if progress:
        progress(1, 1)
    return analysis


def calibrate(loaded: LoadedModel, analysis: ChannelAnalysis, run: Run, *, lossy: bool) -> CalibrationData:
    """Calibration and evaluation samples (the user's two sets, or one set split 3:1), and the
    activation statistics when a lossy run's criterion or compensation reads them."""
    config = run.config
    if not config.calibration:
        return CalibrationData()
    from ..calibration import calibration_samples

    proto, source = loaded.proto, loaded.source
    cal, evaluation, note = calibration_samples(config, proto, source)
    stats = None
    if (
        cal is not None
        and lossy
        and (run.criteria.is_data(config.criterion) or config.compensation in ("auto", "calibration"))
    ):
        stats = sink_statistics(proto, analysis, cal, progress=run.progress_of("calibration"), source=source)
    return CalibrationData(cal, evaluation, note, stats)
