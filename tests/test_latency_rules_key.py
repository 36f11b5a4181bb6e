"""The latency cache's key for rules (onnxprune/latency/cache.py, rules_key): rule objects are
told apart by their constructor's arguments, not their class alone."""

from __future__ import annotations

import onnxprune
from onnxprune.latency.cache import rules_key
from onnxprune.rules import passthrough


class ScaledActRule:
    """An element-wise custom op whose constant mapping depends on its argument."""

    op_types = ("ScaledAct",)
    domain = "com.example"

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def propagate(self, node, ctx):
        return passthrough(node, ctx, lambda c: c * self.scale)

    def apply(self, node, ctx):
        return None


def _registry(scale: float) -> object:
    return onnxprune.default_registry().register(ScaledActRule(scale))


def test_rule_objects_of_one_class_with_other_arguments_key_other_tables() -> None:
    """Two ScaledActRule objects (scale 1 and 0) gave one key: a table built with the first was
    read back for the second, whose units may differ."""
    one, zero = rules_key(_registry(1.0)), rules_key(_registry(0.0))
    assert one is not None and zero is not None
    assert one != zero
    assert rules_key(_registry(1.0)) == one  # the same arguments: the same key, run after run
    assert rules_key(onnxprune.default_registry()) is None  # the default rules keep their key
