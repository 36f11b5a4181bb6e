"""onnxprune: remove convolution filters (output channels) straight from ONNX models.

Names are imported on first use (PEP 562), so ``onnxprune --help`` does not load onnx,
onnxruntime or OpenVINO.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "prune": "api",
    "analyze": "api",
    "plan": "api",
    "apply": "api",
    "verify": "api",
    "load": "api",
    "save": "api",
    "sensitivity": "api",
    "SensitivityResult": "sensitivity_analysis",
    "quantize": "quantization",
    "QuantizeResult": "quantization",
    "QuantizeReport": "quant_report",
    "QuantizeConfig": "quantize_config",
    "PruneResult": "api",
    "PruneReport": "report",
    "PruneConfig": "config",
    "LayerRule": "layer_rules",
    "CriterionRegistry": "criteria",
    "default_criteria": "criteria",
    "PruningPlan": "planning",
    "ChannelAnalysis": "analysis",
    "ChannelGroup": "analysis",
    "Layout": "_core",
    "NotApplicable": "_core",
    "Rule": "rules",
    "RuleRegistry": "rules",
    "default_registry": "rules",
    "VerificationResult": "verification",
    "OnnxPruneError": "errors",
    "LoadError": "errors",
    "UsageError": "errors",
    "UnsupportedModel": "errors",
    "VerificationFailed": "errors",
    "ValidationFunctionFailed": "errors",
    "BackendMissing": "errors",
    "WriteError": "errors",
    "LeftoverWarning": "errors",
    "InputsNotFound": "errors",
    "InterruptedAfterWriting": "errors",
    "Message": "errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from ._core import Layout, NotApplicable
    from .analysis import ChannelAnalysis, ChannelGroup
    from .api import PruneResult, analyze, apply, load, plan, prune, save, sensitivity, verify
    from .config import PruneConfig
    from .criteria import CriterionRegistry, default_criteria
    from .errors import (
        BackendMissing,
        InputsNotFound,
        InterruptedAfterWriting,
        LeftoverWarning,
        LoadError,
        Message,
        OnnxPruneError,
        UnsupportedModel,
        UsageError,
        ValidationFunctionFailed,
        VerificationFailed,
        WriteError,
    )
    from .layer_rules import LayerRule
    from .planning import PruningPlan
    from .quant_report import QuantizeReport
    from .quantization import QuantizeResult, quantize
    from .quantize_config import QuantizeConfig
    from .report import PruneReport
    from .rules import Rule, RuleRegistry, default_registry
    from .sensitivity_analysis import SensitivityResult
    from .verification import VerificationResult
