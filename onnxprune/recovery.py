"""Recovery after the surgery, as the options ask: reconstruction (least-squares refit of the
readers of removed channels), then re-calibration (the kept channels' statistics corrected to
the original's). One entry point for the run's result, the fidelity search's trials and the
candidates a validation function judges, so each is built the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx

from .analysis import ChannelAnalysis
from .planning import PruningPlan
from .reconstruction import ReconstructionCache
from .rules import RuleRegistry

if TYPE_CHECKING:
    from .recalibration import RecalibratedLayer
    from .reconstruction import ReconstructedLayer

__all__ = ["RecoveryCache", "recover_model"]


@dataclass
class RecoveryCache:
    """What recovery reads from the original model and one set of calibration samples alone
    (the readers' input rows, the original's statistics), and the pruned models' statistics
    by what computes them (recalibration's ``memo``), kept across calls with both the same:
    the fidelity search's trials. Held by the caller; nothing is kept between runs; used with
    other samples it raises ValueError (as ReconstructionCache does)."""

    reconstruction: ReconstructionCache = field(default_factory=ReconstructionCache)
    moments: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    # the samples it serves (their ids, the samples kept alive): the statistics above are keyed
    # by tensor name and by what computes a tensor, not by the samples
    _feeds: tuple | None = field(default=None, repr=False)
    _held: list = field(default_factory=list, repr=False)

    def bind(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Check that the cache serves these samples (the first call binds it); ValueError else."""
        ids = tuple(id(f) for f in feeds)
        if self._feeds is None:
            self._feeds, self._held = ids, list(feeds)
        elif ids != self._feeds:
            raise ValueError("a RecoveryCache serves one set of calibration samples")


def recover_model(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    analysis: ChannelAnalysis,
    plan: PruningPlan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    reconstruct: bool,
    recalibrate: bool,
    reconstruct_from: str = "original",
    reconstruct_levels: int | None = None,
    registry: RuleRegistry | None = None,
    seed: int = 0,
    recalibration_passes: int | None = None,
    shallow_recalibration: bool = False,
    source: str = "<model>",
    progress: Callable[[int, int], None] | None = None,
    cache: RecoveryCache | None = None,
    measure: bool = True,
    carry_forward: bool = True,
) -> tuple[onnx.ModelProto, tuple[ReconstructedLayer, ...], tuple[RecalibratedLayer, ...]]:
    """``pruned`` refitted and/or re-calibrated on ``feeds`` (a new model; ``pruned`` is not
    changed), with the layers refitted and the layers re-calibrated; ``progress(done, total)``
    counts the layers refitted; ``cache`` keeps what recovery reads from the original and
    ``feeds`` for the next call with the same (the result is the same without it);
    ``recalibration_passes`` and ``shallow_recalibration``: recalibration.recalibrate's
    ``max_passes`` and ``shallow_only``; ``measure=False`` skips the re-calibration's measurements of the drift before and after (a
    search's trial does not report them: nan); ``carry_forward``: recalibration.recalibrate's;
    ``reconstruct_from``: reconstruction.reconstruct's ``inputs`` ("original", or "pruned":
    sequential); ``reconstruct_levels``: its ``levels`` (None: every level in sequence)."""
    model, layers, recalibrated = pruned, (), ()
    if cache is not None:
        cache.bind(feeds)
    if reconstruct:
        from .reconstruction import reconstruct as refit

        model, layers = refit(
            original,
            model,
            analysis,
            plan,
            feeds,
            registry=registry,
            seed=seed,
            source=source,
            progress=progress,
            cache=None if cache is None else cache.reconstruction,
            inputs=reconstruct_from,
            levels=reconstruct_levels,
        )
    if recalibrate:
        from .recalibration import recalibrate as correct

        passes = {} if recalibration_passes is None else {"max_passes": recalibration_passes}
        passes["shallow_only"] = shallow_recalibration
        model, recalibrated = correct(
            original,
            model,
            analysis,
            plan,
            feeds,
            registry=registry,
            source=source,
            cache=None if cache is None else cache.moments,
            memo=None if cache is None else cache.measured,
            measure=measure,
            carry_forward=carry_forward,
            **passes,
        )
    return model, tuple(layers), tuple(recalibrated)
