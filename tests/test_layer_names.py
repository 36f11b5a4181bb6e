"""layer_names: which layers a --config entry or an --exclude pattern selects, one rule for the
budget (layer_budgets) and for the check that refuses a selection of no layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxprune.api import analyze
from onnxprune.budget import layer_budgets
from onnxprune.config import PruneConfig
from onnxprune.errors import UsageError
from onnxprune.layer_names import check_layers_named, rule_matches
from onnxprune.layer_rules import LayerRule

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_one_rule_selects_for_the_budget_and_the_check() -> None:
    analysis = analyze(str(FIXTURES / "residual.onnx"))
    layers = [(s.node, s.op) for s in analysis.sources]
    entry = LayerRule(op_types=("Conv",), op_names=("node_(4|28)$",), sparsity=0.5)
    chosen = [node for node, op in layers if rule_matches(entry, node, op)]
    assert chosen == ["Conv_node_4", "Conv_node_28"]
    config = PruneConfig(ratio=0.25, layer_rules=(entry,))
    budgets = layer_budgets(analysis, config)
    assert [n for n, b in budgets.items() if b.sparsity == 0.5] == chosen
    assert all(b.sparsity == 0.25 for n, b in budgets.items() if n not in chosen)
    check_layers_named(analysis, config, "r.onnx")  # selects two layers: accepted
    none = PruneConfig(ratio=0.25, layer_rules=(LayerRule(op_types=("ConvTranspose",), sparsity=0.5),))
    with pytest.raises(
        UsageError, match=r"^layer_rules entry 0 \(op_types \['ConvTranspose'\]\) matches no layer of r\.onnx"
    ):
        check_layers_named(analysis, none, "r.onnx")
