"""Criteria decide which channel groups to remove.

``zero`` removes provably constant channels exactly. The others score every output channel of
every source layer (higher = more important) and a budget turns the scores into a plan:
weight-based ones see each layer's filters, data-based ones activation statistics measured on
calibration inputs where the channels are read (``reconstruction``: the readers' input
covariance, see reconstruction_error). Criteria live in a ``CriterionRegistry`` object:
copy the default one and register your own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .filters import LayerFilters, source_filters
from .norms import bn_gamma, fpgm, kmeans, l1, l2, random_scores
from .zero import zero_plan

__all__ = ["CriterionRegistry", "LayerFilters", "WeightCriterion", "default_criteria", "source_filters", "zero_plan"]

WeightCriterion = Callable[[LayerFilters, int, np.random.Generator], np.ndarray]
"""(layer filters, channels the budget keeps in the layer, seeded generator) -> score per channel"""

DATA_CRITERIA = {
    "apoz": "1 - average percentage of zeros of the channel where it is read (Hu et al. 2016)",
    "mean-activation": "mean |activation| of the channel where it is read",
    "reconstruction": "error the readers cannot absorb by least squares when the channel goes (ThiNet; see reconstruction_error)",
    "contribution": "variance of the channel's contribution to its readers' outputs: the error it leaves replaced by its mean (see reconstruction_error)",
}


class CriterionRegistry:
    """Named criteria. ``zero`` and the data criteria are built in; weight criteria are functions."""

    def __init__(self) -> None:
        self._weight: dict[str, WeightCriterion] = {}

    def register(self, name: str, fn: WeightCriterion) -> CriterionRegistry:
        """Add a weight-based criterion; returns self for chaining."""
        if name == "zero" or name in DATA_CRITERIA:
            raise ValueError(f"{name!r} is a built-in criterion")
        self._weight[name] = fn
        return self

    def weight_criterion(self, name: str) -> WeightCriterion | None:
        return self._weight.get(name)

    def is_data(self, name: str) -> bool:
        return name in DATA_CRITERIA

    def names(self) -> list[str]:
        return ["zero", *self._weight, *DATA_CRITERIA]

    def copy(self) -> CriterionRegistry:
        new = CriterionRegistry()
        new._weight = dict(self._weight)
        return new


def default_criteria() -> CriterionRegistry:
    """A new registry with every built-in criterion."""
    reg = CriterionRegistry()
    for name, fn in (
        ("l1", l1),
        ("l2", l2),
        ("fpgm", fpgm),
        ("random", random_scores),
        ("kmeans", kmeans),
        ("bn-gamma", bn_gamma),
    ):
        reg.register(name, fn)
    return reg
