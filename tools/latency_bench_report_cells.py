"""Cells of the latency benchmark's report (tools/latency_bench_report.py): numbers as the tables
print them, a row's label and its plans' distance in latency, and the verdicts (is the latency
plan's fidelity better than the MACs plan's; paired counts against their noise)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "KEPT_NOTHING",
    "apart_of",
    "better_cell",
    "centered_verdict",
    "fmt",
    "heldout_verdict",
    "paired_verdict",
    "ratio_cell",
    "retimed_load",
    "row_batch",
    "row_label",
    "row_verdict",
    "scan_ratio",
    "score_cell",
    "task_score",
]


def better_cell(fl: float | None, fm: float | None, cl: float | None, cm: float | None) -> str:
    """Is the latency plan's fidelity (``fl``; cosine ``cl``) better than the MACs plan's
    (``fm``, ``cm``): by the score, else by the cosine beneath an equal score."""
    if fl is not None and fm is not None and fl != fm:
        return "yes" if fl > fm else "**no**"
    if cl is not None and cm is not None and cl != cm:
        return f"equal score; cosine {'yes' if cl > cm else '**no**'}"
    return "equal"


def fmt(x: Any, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def task_score(entry: dict, acc: bool) -> tuple[float | None, float | None]:
    """(task score, cosine) of a plan: the digits CNN's accuracy, else prune's held-out fidelity."""
    return (entry.get("accuracy") if acc else entry["fidelity"]), entry.get("cosine")


def score_cell(value: float | None, cos: float | None, show_cos: bool) -> str:
    return fmt(value, ".4f") + (f" (cos {cos:.4f})" if show_cos and cos is not None else "")


def apart_of(row: dict) -> float:
    """The MACs plan's ratio minus the latency plan's: in the final run, else in the scan."""
    fin = row.get("final")
    if not fin:
        return row["macs_plan_gap"]
    return fin.get("apart", fin["macs_plan_ratio"] - fin["latency_plan_ratio"])  # grouped: in the match's own run


def row_label(row: dict) -> str:
    """The row's model, and the option both its plans were made with (and its batch, when not 1)."""
    name = f"{row['model'].removesuffix('+rc')} + reconstruct" if row.get("reconstruct") else row["model"]
    batch = row_batch(row)
    return f"{name} (batch {batch})" if batch != 1 else name


def row_batch(row: dict) -> int:
    """The batch the row's plans were timed at (the latency plan's deployment; 1 if unrecorded)."""
    return int(row.get("latency_plan", {}).get("latency", {}).get("settings", {}).get("batch", 1))


def ratio_cell(fin: dict, i: int) -> str:
    m = fin["timings"]["models"][i]
    return f"{m['ratio']:.3f} ({m['ratio_p10']:.3f}–{m['ratio_p90']:.3f})"


def scan_ratio(plan: dict) -> str:
    """A MACs plan's ratio in its scan A/B run; "refined" for one the final run's refinement made
    (timed only with every plan together)."""
    return f"{plan['ab']['ratio']:.3f}" if plan.get("ab") else "refined"


def retimed_load(together: dict) -> str:
    """The load of a together run made again after the plans (``extra-time``), beside theirs."""
    return f", {together['loadavg']:.1f}" if together.get("retimed") else ""


# Below this centered cosine a plan has kept nothing of the input-dependent output (unrelated
# outputs score about 0 either way): two such plans are not told apart by it.
KEPT_NOTHING = 0.05


def centered_verdict(latency: float, macs: float) -> str:
    """Whether the latency plan keeps more of the input-dependent output than the MACs plan
    (centered cosines); neither, when both kept nothing of it (``KEPT_NOTHING``)."""
    if max(latency, macs) < KEPT_NOTHING:
        return f"neither keeps any (both < {KEPT_NOTHING:g})"
    return "yes" if latency > macs else "**no**"


def heldout_verdict(h: dict) -> str:
    """A row's paired held-out comparison in a few words for the headline table: how many inputs,
    and whether the latency plan is better beyond noise (the tables below give the figures)."""
    if h.get("metric") == "detection":
        return f"{h['n']} more pages: {paired_verdict(h['higher_latency'], h['higher_macs'])}"
    what = "labelled images" if h.get("labelled") else "inputs"
    return f"{h['n']} {what}: {paired_verdict(h['only_latency'], h['only_macs'])}"


def row_verdict(row: dict, only_latency: int, only_macs: int) -> str:
    """A held-out table's verdict for one row: the paired verdict, flagged when the row's MACs plan
    measured more than 0.01 from the latency plan's ratio (then not a comparison at equal latency);
    a row without a MACs plan measurement is not flagged."""
    verdict = paired_verdict(only_latency, only_macs)
    measured = "final" in row or "macs_plan_gap" in row
    return verdict + " (not at equal latency)" if measured and abs(apart_of(row)) > 0.01 else verdict


def paired_verdict(only_latency: int, only_macs: int) -> str:
    """Whether the latency plan's paired count stands out of its noise: |a - b| > 2 sqrt(a + b)
    (McNemar, about 95%)."""
    a, b = only_latency, only_macs
    if abs(a - b) > 2 * (a + b) ** 0.5:
        return "yes" if a > b else "**no**"
    return "tie (within noise)"
