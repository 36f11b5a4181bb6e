"""QuantizeLinear/DequantizeLinear on constant arrays (per-tensor or per-axis scales), as the
parameter resolver needs them to see the float values behind a quantized weight."""

from __future__ import annotations

import numpy as np

__all__ = ["qdq_values"]


def _broadcast_axis(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if v.ndim != 1 or ndim == 0:
        return v
    axis = axis % ndim
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def qdq_values(op: str, x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    """``op`` (DequantizeLinear or QuantizeLinear) applied to ``x``, as float32."""
    s = _broadcast_axis(scale.astype(np.float64), x.ndim, axis)
    z = np.zeros(1) if zp is None else _broadcast_axis(zp.astype(np.float64), x.ndim, axis)
    if op == "DequantizeLinear":
        return ((x.astype(np.float64) - z) * s).astype(np.float32)
    if zp is not None:
        info = np.iinfo(zp.dtype)
        lo, hi = info.min, info.max
    else:
        lo, hi = 0, 255
    return np.clip(np.rint(x.astype(np.float64) / s) + z, lo, hi).astype(np.float32)
