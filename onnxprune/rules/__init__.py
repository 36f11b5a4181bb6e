"""One module per op family; ``default_registry()`` builds the registry of all of them.

The protocols a rule implements (``Rule``; ``LayerSemantics`` for a weight-bearing op;
``ChannelAffine`` for a per-channel affine op such as BatchNormalization) and
the contexts it works in (``PropagateContext``, ``ApplyContext``) are in ``base``."""

from __future__ import annotations

from collections.abc import Iterable

from .._core import NotApplicable
from .activation import ClipRule, PReluRule, UnaryRule, unary_rules
from .base import (
    ApplyContext,
    ChannelAffine,
    Layer,
    LayerSemantics,
    PropagateContext,
    Rule,
    RuleRegistry,
    passthrough,
)
from .concat_split import ConcatRule, SliceRule, SplitRule
from .conv import ConvRule, ConvTransposeRule
from .elementwise import BroadcastRule, broadcast_rules
from .gemm import GemmRule, MatMulRule
from .integer import ConvIntegerRule, DynamicQuantizeLinearRule, MatMulIntegerRule, StaticQuantizedRule
from .normalization import BatchNormalizationRule, ChannelMixingNormalizationRule, InstanceNormalizationRule
from .pooling import PadRule, PoolRule, ReduceRule, ResizeRule
from .quantize import FakeQuantizeRule, QuantizeRule
from .reshape import ReshapeRule, ShapeRule, TransposeRule

__all__ = [
    "ApplyContext",
    "BroadcastRule",
    "ChannelAffine",
    "ConvIntegerRule",
    "ConvRule",
    "ConvTransposeRule",
    "GemmRule",
    "Layer",
    "LayerSemantics",
    "MatMulIntegerRule",
    "MatMulRule",
    "NotApplicable",
    "PropagateContext",
    "Rule",
    "RuleRegistry",
    "UnaryRule",
    "default_registry",
    "load_rules",
    "passthrough",
]


def default_registry() -> RuleRegistry:
    """A new registry holding every built-in rule. Each call returns a fresh object, so adding
    rules to it never affects another caller."""
    rules: list[Rule] = [
        ConvRule(),
        ConvTransposeRule(),
        GemmRule(),
        MatMulRule(),
        BatchNormalizationRule(),
        InstanceNormalizationRule(),
        ChannelMixingNormalizationRule(),
        ClipRule(),
        PReluRule(),
        *unary_rules(),
        *broadcast_rules(),
        PoolRule(),
        ResizeRule(),
        PadRule(),
        ReduceRule(),
        ConcatRule(),
        SplitRule(),
        SliceRule(),
        ReshapeRule(),
        TransposeRule(),
        ShapeRule(),
        QuantizeRule(),
        FakeQuantizeRule(),
        DynamicQuantizeLinearRule(),
        ConvIntegerRule(),
        MatMulIntegerRule(),
        StaticQuantizedRule(),
    ]
    return RuleRegistry(rules)


def load_rules(rules: object, registry: RuleRegistry | None = None) -> RuleRegistry:
    """The registry a run uses: ``registry`` (default: ``default_registry()``) extended by
    ``rules`` (``PruneConfig.rules``, ``--rules``), which may be

    - None: ``registry`` as it is;
    - a ``RuleRegistry``: used as it is (not with ``registry`` too: two registries);
    - a rule, a rule class (made with no arguments) or a list of them: registered on a copy of
      ``registry``;
    - a function ``f(registry)``: called with a copy of ``registry`` to extend; it returns the
      registry to use, or None for the copy it extended;
    - a spec ``"FILE.py:NAME"`` / ``"module:NAME"`` naming any of these (imported as
      ``--validate``'s function is).

    Anything else is a UsageError naming the option (and the file)."""
    from ..errors import UsageError

    if rules is None:
        return registry if registry is not None else default_registry()
    label, found = "rules", rules
    if isinstance(rules, str):
        from ..user_validation import load_object

        label = f"--rules {rules}"
        found = load_object(rules, option="--rules", noun="name", error=UsageError, prefix=label)
    base = registry if registry is not None else default_registry()
    what = "a rule registry, a rule (or its class), a list of rules or a function that extends a registry"
    if isinstance(found, RuleRegistry):
        if registry is not None and found is not registry:
            raise UsageError(f"{label}: a rule registry, and registry= gives another: give one, or give rules to add")
        return found
    if isinstance(found, (Rule, type)) or (isinstance(found, Iterable) and not isinstance(found, (str, bytes))):
        items = [found] if isinstance(found, (Rule, type)) else list(found)  # type: ignore[call-overload]
        extended = base.copy()
        for item in items:
            if isinstance(item, type):
                try:
                    item = item()
                except Exception as exc:
                    raise UsageError(
                        f"{label}: rule class {item.__name__} could not be made with no arguments "
                        f"({type(exc).__name__}: {exc})"
                    ) from None
            if not isinstance(item, Rule):
                raise UsageError(
                    f"{label}: a {type(item).__name__} ({item!r:.60}) is not a rule (op_types, domain, propagate, apply); "
                    f"expected {what}"
                )
            extended.register(item)
        return extended
    if callable(found):
        copy = base.copy()
        try:
            result = found(copy)
        except (Exception, SystemExit) as exc:
            raise UsageError(f"{label}: calling it raised {type(exc).__name__}: {exc}") from None
        if result is None:
            return copy
        if isinstance(result, RuleRegistry):
            return result
        raise UsageError(f"{label}: the function returned {type(result).__name__}, not a RuleRegistry (or None)")
    raise UsageError(f"{label}: a {type(found).__name__} ({found!r:.60}), not {what}")
