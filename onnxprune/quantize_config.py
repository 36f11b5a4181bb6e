"""The options of post-training int8 quantization (NNCF), shared by ``quantize`` and
``prune --quantize int8``, as PruneConfig is by ``prune``'s API and CLI."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from .config import DEFAULT_MAX_DROP
from .errors import UsageError
from .option_checks import (
    check_bools,
    check_mapping,
    check_option_names,
    check_paths,
    check_preprocess,
    check_regex,
    frozen_shapes,
    patterns,
)

if TYPE_CHECKING:
    from .user_validation import Candidate, MaxDrop

__all__ = ["QUANTIZE_FORMATS", "QUANTIZE_PRESETS", "QuantizeConfig"]


QUANTIZE_PRESETS = ("performance", "mixed")
QUANTIZE_FORMATS = ("onnx", "ir")


@dataclass(frozen=True)
class QuantizeConfig:
    """Every option of post-training int8 quantization (NNCF), for ``quantize`` and
    ``prune --quantize int8``.

    calibration: .npz keyed by input name (first axis = samples) or a folder of images.
    preprocess: how to turn a folder of images into inputs (see calibration.Preprocess).
    evaluation_inputs: held-out .npz for the int8 model's fidelity; without it every 4th
        calibration sample is held out (never used to calibrate) and the report says so.
    preset: performance (symmetric activations: fastest) or mixed (asymmetric activations:
        for activations that are not centred at zero, e.g. after no ReLU).
    ignored_scope: ONNX node names or regular expressions (searched in node names) whose
        nodes stay in float; each must name or match at least one node.
    fast_bias_correction: NNCF's bias correction after quantizing (on by default, as NNCF).
    subset_size: at most this many calibration samples are used (NNCF's default, 300).
    max_drop: keep the most sensitive layers in float until the fidelity against the float
        model, on the calibration samples, drops by at most this (absolute; NNCF's
        quantize_with_accuracy_control); the held-out samples stay out of the decision. With
        ``validate``: the drop of your function's value, "D" (absolute) or "D%" (relative).
    validate: your validation function (see PruneConfig.validate): NNCF's accuracy control is
        judged by it instead of the fidelity (its validation_fn), with ``max_drop`` (default
        0.01 absolute, NNCF's).
    input_shapes: static shapes for inputs with dynamic dimensions other than the batch.
    fidelity_metrics: output name (or "*") -> top1, ctc, dense, detection or cosine, with
        parameters as "ctc:blank=K" (default: detected per output from shape and values).
    seed: picks the images of a folder larger than the subset.
    """

    calibration: str | None = None
    preprocess: str | None = None
    evaluation_inputs: str | None = None
    preset: str = "performance"
    ignored_scope: tuple[str, ...] = ()
    fast_bias_correction: bool = True
    subset_size: int = 300
    max_drop: MaxDrop | float | str | None = None
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: MappingProxyType({}))
    fidelity_metrics: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    seed: int = 0
    validate: Callable[[Candidate], float] | str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shapes", frozen_shapes(self.input_shapes))
        check_mapping(self.fidelity_metrics, "fidelity_metrics", "{'*': 'cosine'}")
        check_bools(self, ("fast_bias_correction",))
        check_paths(self, ("calibration", "evaluation_inputs"))
        check_preprocess(self.calibration, self.preprocess)
        object.__setattr__(self, "fidelity_metrics", MappingProxyType(dict(self.fidelity_metrics)))
        from .fidelity_metrics import check_metrics

        check_metrics(self.fidelity_metrics)
        scope = patterns(self.ignored_scope, "ignored_scope", "a node name or regular expression")
        object.__setattr__(self, "ignored_scope", scope)
        for pattern in scope:
            check_regex(pattern, "--ignored-scope")
        if self.preset not in QUANTIZE_PRESETS:
            raise UsageError(f"quantization preset must be one of {', '.join(QUANTIZE_PRESETS)}, got {self.preset!r}")
        if isinstance(self.subset_size, bool) or not isinstance(self.subset_size, int) or self.subset_size < 1:
            raise UsageError(f"--subset-size must be a positive integer, got {self.subset_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"seed must be a non-negative integer, got {self.seed!r}")
        from .user_validation import MaxDrop, parse_max_drop

        if self.validate is not None:
            if not (callable(self.validate) or isinstance(self.validate, str)):
                raise UsageError(
                    f"validate must be a function or 'FILE.py:function' / 'module:function', got {type(self.validate).__name__}"
                )
            # Your function's drop: in its own units, or relative; NNCF's default without one.
            drop = MaxDrop(DEFAULT_MAX_DROP) if self.max_drop is None else parse_max_drop(self.max_drop)
            object.__setattr__(self, "max_drop", drop)
        elif self.max_drop is not None:
            if isinstance(self.max_drop, (str, MaxDrop)):  # fidelity's baseline is 1.0: D% is D/100
                object.__setattr__(self, "max_drop", parse_max_drop(self.max_drop).allowed(1.0))
            if not (0.0 <= self.max_drop < 1.0):  # type: ignore[operator]
                raise UsageError(f"max drop must be in [0, 1), got {self.max_drop}")

    def with_options(self, **options: object) -> QuantizeConfig:
        """This config with ``options`` replaced."""
        check_option_names(type(self), options)
        return replace(self, **options)  # type: ignore[arg-type]
