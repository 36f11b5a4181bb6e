"""Plot of a latency table: per unit, the measured points and the fitted curve; beside it, the
latency and the MACs removing half of each unit saves."""

from __future__ import annotations

import os

from .table import LatencyTable

__all__ = ["plot_latency_table"]


def plot_latency_table(table: LatencyTable, path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = sorted(table.units.values(), key=lambda u: -u.saving(u.channels // 2))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    scale = 1e3  # ms
    for u in units:
        ks = [k for k, _ in u.points]
        xs = list(range(min(ks), u.channels + 1))
        (line,) = left.plot(
            [k / u.channels for k in xs],
            [u.predict(k) * scale for k in xs],
            linewidth=1,
            alpha=0.8,
            label=f"{u.unit[-28:]} (step {u.step})" if len(units) <= 12 else None,
        )
        left.plot(
            [k / u.channels for k in ks], [t * scale for _, t in u.points], "o", markersize=3, color=line.get_color()
        )
    left.set_xlabel("kept fraction of the unit's channels")
    left.set_ylabel("unit subgraph latency (ms): points measured, lines fitted")
    if len(units) <= 12:
        left.legend(fontsize=6)
    left.grid(alpha=0.3)
    shown = units[:30]
    names = [u.unit[-24:] for u in shown]
    lat = [100 * u.saving(u.channels // 2) / table.baseline for u in shown]
    macs = [100 * dict(u.macs_saved).get(_nearest(u, u.channels // 2), 0.0) for u in shown]
    ys = range(len(shown))
    right.barh([y + 0.2 for y in ys], lat, height=0.4, label="latency saved (% of the model)")
    right.barh([y - 0.2 for y in ys], macs, height=0.4, label="MACs saved (% of the model)")
    right.set_yticks(list(ys), names, fontsize=6)
    right.invert_yaxis()
    right.set_xlabel("removing half of the unit alone")
    right.legend(fontsize=7)
    right.grid(alpha=0.3, axis="x")
    s = table.settings
    fig.suptitle(
        f"{title or 'latency table'}: baseline {table.baseline * scale:.3f} ms, {s.backend} {s.precision}, "
        f"batch {s.batch}, {s.hint} hint ({table.key.get('cpu', '')})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=120)
    plt.close(fig)


def _nearest(u, kept: int) -> int:
    return min((k for k, _ in u.macs_saved), key=lambda k: abs(k - kept), default=kept)
