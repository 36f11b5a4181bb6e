"""Activation statistics over calibration inputs, measured where channels are read (at the
sinks): APoZ (Hu et al. 2016), mean |activation|, and the mean used for compensation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..analysis import ChannelAnalysis
from ..runtime import session

__all__ = ["ActivationStats", "group_activation_scores", "sink_statistics"]


@dataclass(frozen=True, eq=False)
class ActivationStats:
    """Per sink tensor, per position along its channel axis."""

    mean: Mapping[str, np.ndarray]
    mean_abs: Mapping[str, np.ndarray]
    zero_fraction: Mapping[str, np.ndarray]
    samples: int


def sink_statistics(
    model: onnx.ModelProto,
    analysis: ChannelAnalysis,
    feeds: Sequence[Mapping[str, np.ndarray]],
    progress: Callable[[int, int], None] | None = None,
    *,
    source: str = "<model>",
) -> ActivationStats:
    """Run the original model on every feed and accumulate statistics of every sink tensor
    (``source``, the model file, names it in errors)."""
    axes = {s.tensor: s.axis for s in analysis.sinks}
    names = sorted(axes)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    m.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names if n not in existing])
    run = session(
        m, source=source, what="the model with its channel readers as outputs (calibration statistics)", optimize=True
    )
    sums: dict[str, np.ndarray] = {}
    abs_sums: dict[str, np.ndarray] = {}
    zeros: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for k, feed in enumerate(feeds):
        if progress:
            progress(k, len(feeds))
        for name, value in zip(names, run.run(feed, names)):
            v = np.moveaxis(np.asarray(value, dtype=np.float64), axes[name], 0)
            v = v.reshape(v.shape[0], -1)
            sums[name] = sums.get(name, 0) + v.sum(axis=1)
            abs_sums[name] = abs_sums.get(name, 0) + np.abs(v).sum(axis=1)
            zeros[name] = zeros.get(name, 0) + (v == 0).sum(axis=1)
            counts[name] = counts.get(name, 0) + v.shape[1]
    if progress:
        progress(len(feeds), len(feeds))
    return ActivationStats(
        mean={n: sums[n] / counts[n] for n in sums},
        mean_abs={n: abs_sums[n] / counts[n] for n in sums},
        zero_fraction={n: zeros[n] / counts[n] for n in sums},
        samples=len(feeds),
    )


def group_activation_scores(analysis: ChannelAnalysis, per_tensor: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per source layer channel scores from a per-sink-position statistic: each group gets the
    mean of the statistic over every position where it is read."""
    total: dict[int, float] = {}
    count: dict[int, int] = {}
    for sink in analysis.sinks:
        values = per_tensor.get(sink.tensor)
        if values is None:
            continue
        roots = analysis.roots(analysis.layouts[sink.tensor].axes[sink.axis])
        for r, v in zip(roots, values):
            total[int(r)] = total.get(int(r), 0.0) + float(v)
            count[int(r)] = count.get(int(r), 0) + 1
    out = {}
    for src in analysis.sources:
        out[src.node] = np.array(
            [total[int(r)] / count[int(r)] if int(r) in count else np.nan for r in analysis.roots(src.ids)]
        )
    return out
