"""One module per op family; ``default_registry()`` builds the registry of all of them.

The protocols a rule implements (``Rule``; ``LayerSemantics`` for a weight-bearing op;
``ChannelAffine`` for a per-channel affine op such as BatchNormalization) and
the contexts it works in (``PropagateContext``, ``ApplyContext``) are in ``base``."""

from __future__ import annotations

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
