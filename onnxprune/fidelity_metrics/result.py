"""What a task metric returns: its one number and the figures behind it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["MetricResult", "NothingToCompare"]


@dataclass(frozen=True)
class MetricResult:
    """A metric's score in [0, 1] (1 = the original's answers) and its own figures."""

    value: float
    details: Mapping[str, float | int | str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))


class NothingToCompare(Exception):
    """The reference gives the metric nothing to judge (no detection, no positive cell): the
    caller scores the output by cosine instead and says why."""
