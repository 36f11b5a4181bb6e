"""What a task metric returns: its one number and the figures behind it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

__all__ = ["MetricResult", "NothingToCompare"]


@dataclass(frozen=True)
class MetricResult:
    """A metric's score in [0, 1] (1 = the original's answers) and its own figures; a
    continuous metric (cosine, dense) also each sample's score, whose mean ``value`` is
    (``batch_mean``: what a batch of other inputs reads)."""

    value: float
    details: Mapping[str, float | int | str] = field(default_factory=lambda: MappingProxyType({}))
    samples: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))


class NothingToCompare(Exception):
    """The reference gives the metric nothing to judge (no detection, no positive cell): the
    caller scores the output by cosine instead and says why."""
