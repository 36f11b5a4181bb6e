"""onnxprune: remove convolution filters (output channels) straight from ONNX models."""

from __future__ import annotations

from ._core import Layout, NotApplicable
from .analysis import ChannelAnalysis, ChannelGroup
from .api import PruneResult, analyze, apply, load, plan, prune, save, verify
from .config import LayerRule, PruneConfig
from .criteria import CriterionRegistry, default_criteria
from .errors import BackendMissing, LoadError, OnnxPruneError, UnsupportedModel, UsageError, VerificationFailed
from .planning import PruningPlan
from .report import PruneReport
from .rules import Rule, RuleRegistry, default_registry
from .verify import VerificationResult

__version__ = "0.1.0"

__all__ = [
    "prune",
    "analyze",
    "plan",
    "apply",
    "verify",
    "load",
    "save",
    "PruneResult",
    "PruneReport",
    "PruneConfig",
    "LayerRule",
    "CriterionRegistry",
    "default_criteria",
    "PruningPlan",
    "ChannelAnalysis",
    "ChannelGroup",
    "Layout",
    "NotApplicable",
    "Rule",
    "RuleRegistry",
    "default_registry",
    "VerificationResult",
    "OnnxPruneError",
    "LoadError",
    "UsageError",
    "UnsupportedModel",
    "VerificationFailed",
    "BackendMissing",
    "__version__",
]
