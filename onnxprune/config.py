"""One frozen options object shared by the Python API and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from .errors import UsageError

__all__ = ["PruneConfig", "parse_input_shape"]


def _frozen_shapes(shapes: Mapping[str, tuple[int, ...]] | None) -> Mapping[str, tuple[int, ...]]:
    return MappingProxyType({k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()})


@dataclass(frozen=True)
class PruneConfig:
    """Every option of a pruning run.

    input_shapes: static shapes for inputs with dynamic dimensions other than the batch.
    verify: run onnxruntime on original and pruned model and compare every output.
    verification_inputs: path of an .npz with arrays keyed by input name (first axis = samples).
    seed: seed of the random verification inputs.
    tolerance: exact removal must hold to max abs diff <= tolerance * output scale.
    """

    criterion: str = "zero"
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: MappingProxyType({}))
    verify: bool = True
    verification_inputs: str | None = None
    seed: int = 0
    tolerance: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shapes", _frozen_shapes(self.input_shapes))
        if not (0.0 < self.tolerance < 1.0):
            raise UsageError(f"tolerance must be in (0, 1), got {self.tolerance}")


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME:d0,d1,...`` (the CLI's --input-shape) into (name, dims)."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name or not dims:
        raise UsageError(f"--input-shape {text!r}: expected NAME:d0,d1,... e.g. input:1,3,224,224")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise UsageError(f"--input-shape {text!r}: dimensions must be integers") from None
    if any(d <= 0 for d in shape):
        raise UsageError(f"--input-shape {text!r}: dimensions must be positive")
    return name, shape
