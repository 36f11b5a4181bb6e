"""The public face: load, analyze, plan, apply, verify, prune."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import onnx

from .analysis import ChannelAnalysis, analyze as _analyze, static_shapes
from .config import PruneConfig
from .criteria import zero_plan
from .errors import UsageError, VerificationFailed
from .graph import concrete_input_shapes, dynamic_batch_inputs, load_model
from .metrics import model_cost
from .planning import PruningPlan
from .report import KeptGroup, LayerChange, PruneReport
from .rules import RuleRegistry, default_registry
from .surgery import apply_pruning
from .verify import VerificationResult, compare_models, load_npz_inputs, make_inputs

__all__ = ["PruneResult", "prune", "analyze", "plan", "apply", "verify", "load", "save"]

CRITERIA = ("zero",)


@dataclass(frozen=True)
class PruneResult:
    """A pruned model and its report."""

    model: onnx.ModelProto
    report: PruneReport
    plan: PruningPlan
    analysis: ChannelAnalysis

    def save(self, path: str | os.PathLike[str]) -> None:
        save(self.model, path)


def load(model: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    """Load and check a model (a path or a ModelProto, which is copied, never modified)."""
    return load_model(model)[0]


def save(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Write ``model`` atomically: to a temporary file in the same folder, then rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{path}: output folder {folder} does not exist")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def analyze(
    model: onnx.ModelProto | str | os.PathLike[str],
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    registry: RuleRegistry | None = None,
) -> ChannelAnalysis:
    """The channel groups of a model, each with its members and the reasons it is pinned."""
    proto, source = load_model(model)
    return _analyze(proto, input_shapes=input_shapes, registry=registry, source=source)


def plan(analysis: ChannelAnalysis, criterion: str = "zero") -> PruningPlan:
    """Decide which groups to remove."""
    if criterion != "zero":
        raise UsageError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    return zero_plan(analysis)


def apply(
    model: onnx.ModelProto, analysis: ChannelAnalysis, pruning_plan: PruningPlan, *, registry: RuleRegistry | None = None
) -> onnx.ModelProto:
    """Remove the plan's groups from a copy of ``model``."""
    return apply_pruning(model, analysis, pruning_plan, registry=registry)


def verify(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    config: PruneConfig = PruneConfig(),
    source: str = "<model>",
) -> VerificationResult:
    """Compare original and pruned on seeded random inputs (batch 1 and 2 for a dynamic batch)
    or on the samples of ``config.verification_inputs``."""
    if config.verification_inputs:
        feeds = load_npz_inputs(config.verification_inputs, original)
        desc = f"{len(feeds)} samples from {config.verification_inputs}"
    else:
        batches = [1, 2] if dynamic_batch_inputs(original) else [None]
        feeds = [make_inputs(original, config.input_shapes, b, config.seed + i, source) for i, b in enumerate(batches)]
        desc = f"seeded random inputs (seed {config.seed}), batch {'1 and 2' if len(batches) == 2 else 'as in the model'}"
    return compare_models(original, pruned, feeds, config.tolerance, desc)


def prune(
    model: onnx.ModelProto | str | os.PathLike[str],
    criterion: str = "zero",
    *,
    config: PruneConfig | None = None,
    registry: RuleRegistry | None = None,
    **options: object,
) -> PruneResult:
    """Prune ``model`` and return the pruned model with its report.

    Options are the fields of PruneConfig (``input_shapes``, ``verify``, ``seed``, ...), given
    either as ``config`` or as keyword arguments. Raises VerificationFailed (nothing returned)
    when the pruned model does not compute what it must.
    """
    config = replace(config or PruneConfig(), criterion=criterion, **options)  # type: ignore[arg-type]
    registry = registry or default_registry()
    proto, source = load_model(model)
    analysis = _analyze(proto, input_shapes=config.input_shapes, registry=registry, source=source)
    pruning_plan = plan(analysis, config.criterion)
    pruned = apply_pruning(proto, analysis, pruning_plan, registry=registry)
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except Exception as exc:
        raise VerificationFailed(f"{source}: the pruned model fails onnx.checker: {str(exc).splitlines()[0]}") from None
    result = None
    if config.verify:
        result = verify(proto, pruned, config, source)
        if not result.passed:
            w = result.worst
            raise VerificationFailed(
                f"{source}: verification failed: output {w.name!r} (batch {w.batch}) differs by {w.max_abs_diff:.3g}, "
                f"more than {config.tolerance:g} x its scale {w.scale:.3g}; nothing written"
            )
    report = _report(source, proto, pruned, analysis, pruning_plan, config, result)
    return PruneResult(model=pruned, report=report, plan=pruning_plan, analysis=analysis)


def _report(
    source: str,
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    analysis: ChannelAnalysis,
    pruning_plan: PruningPlan,
    config: PruneConfig,
    verification: VerificationResult | None,
) -> PruneReport:
    removed = np.zeros(len(analysis.root_of), dtype=bool)
    if pruning_plan.removed_groups:
        removed = np.isin(analysis.root_of, np.asarray(pruning_plan.removed_groups))
    layers = []
    total = cut = 0
    for src in analysis.sources:
        n, gone = len(src.ids), int(removed[src.ids].sum())
        total += n
        cut += gone
        if gone:
            layers.append(LayerChange(src.node, src.op, n, n - gone))
    in_shapes = concrete_input_shapes(original, config.input_shapes, source)
    before = model_cost(original, analysis.shapes)
    after = model_cost(pruned, static_shapes(pruned, in_shapes))
    removed_set = set(pruning_plan.removed_groups)
    kept = tuple(
        KeptGroup(g.id, len(g.members), g.members, pruning_plan.kept_reasons.get(g.id, ()))
        for g in analysis.groups
        if g.id not in removed_set and pruning_plan.kept_reasons.get(g.id)
    )
    notes = []
    if not before.macs_complete:
        notes.append("some layers have unknown shapes; their MACs are not counted (give --input-shape)")
    return PruneReport(
        model=source,
        criterion=pruning_plan.criterion,
        channels_total=total,
        channels_removed=cut,
        groups_total=len(analysis.groups),
        groups_removed=len(pruning_plan.removed_groups),
        params_before=before.params,
        params_after=after.params,
        macs_before=before.macs,
        macs_after=after.macs,
        macs_complete=before.macs_complete and after.macs_complete,
        size_before=original.ByteSize(),
        size_after=pruned.ByteSize(),
        layers=tuple(layers),
        kept_groups=kept,
        verification=verification,
        notes=tuple(notes),
    )
