"""The --macs-target plan of tools/bench_latency.py matched to the latency plan's measured
latency: the scan (secant/bisection steps on the MACs target, each plan timed with the original
and the latency plan in one interleaved run) and the final run's re-match among the scan's
nearest plans (and, when none matches there, one more target for another final run). Pure given
``measure``: nothing here prunes or times (bench_latency passes the function that does), so
tests drive it with a fake, deterministic measurement."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np

__all__ = [
    "FINAL_CANDIDATES",
    "HI",
    "LO",
    "MATCH",
    "MAX_SCAN",
    "SLOPE",
    "final_candidates",
    "grouped_final",
    "matched_macs_plan",
    "matched_scan",
    "refined_target",
    "rematch",
    "rematch_row",
]

MATCH = 0.01  # the MACs plan's measured ratio within this of the latency plan's: the same latency
MAX_SCAN = 6  # MACs plans pruned and timed at most per model
FINAL_CANDIDATES = 3  # the scan's MACs plans nearest the latency plan timed again in the final run
LO, HI = 0.05, 0.99  # the MACs targets the scan may try
SLOPE = (0.3, 3.0)  # latency ratio per MACs ratio the secant may assume (measured: 0.35-1.0)


def matched_scan(
    goal: float, start: float, measure: Callable[[float], dict], *, tol: float = MATCH, steps: int = MAX_SCAN
) -> dict:
    """The MACs plan whose measured latency is closest to the latency plan's: secant steps on
    the MACs target from ``start`` (the latency plan's MACs ratio) on the *gap* (the candidate's
    ratio minus the latency plan's, both timed in the same interleaved run, so a load that pulls
    every ratio toward 1 moves both alike), kept inside the bracket of a too-slow and a too-fast
    target once there is one (bisection when the secant leaves it), until a plan is within
    ``tol`` or ``steps`` plans were timed. ``goal``: the latency plan's ratio (the first secant
    goes through the original, gap 1 - goal). ``measure(target) -> entry`` prunes and times one
    (entry["ab"]["gap"])."""
    seen: dict[float, dict] = {}

    def at(t: float) -> float:
        t = round(min(max(t, LO), HI), 3)
        if t not in seen:
            seen[t] = measure(t)
        return seen[t]["ab"]["gap"]

    points = [(start, at(start))]
    while len(seen) < steps and abs(points[-1][1]) > tol:
        slow = [t for t, d in points if d > 0]  # too slow: fewer MACs needed
        fast = [t for t, d in points if d <= 0]
        hi, lo = (min(slow) if slow else None), (max(fast) if fast else None)
        (t0, d0), (t1, d1) = (points[-2] if len(points) > 1 else (1.0, 1.0 - goal)), points[-1]
        # its slope (latency ratio per MACs ratio) kept within SLOPE: A/B noise on two close points
        # must not send it to the end of the range
        slope = (d1 - d0) / (t1 - t0) if t1 != t0 else 1.0
        t = t1 - d1 / min(max(slope, SLOPE[0]), SLOPE[1])
        if hi is not None and lo is not None and not lo + 0.002 < t < hi - 0.002:
            t = (lo + hi) / 2  # the secant left the bracket: bisect
        t = round(min(max(t, LO), HI), 3)
        if t in seen:  # the MACs grid cannot get closer than a plan already timed
            break
        points.append((t, at(t)))
    return min(seen.values(), key=lambda e: (abs(e["ab"]["gap"]), e["macs_target"]))


def matched_macs_plan(goal: float, macs: float, measure: Callable[[float], dict], steps: int = MAX_SCAN) -> dict:
    """The row's MACs-plan fields: every plan the scan timed (``macs_scan``, in order), the
    closest (``macs_plan``), whether it is within ``MATCH`` and its gap. ``goal``: the latency
    plan's measured ratio; ``macs``: its MACs ratio (the scan's start); ``measure``: as
    ``matched_scan``'s."""
    scan: list[dict] = []

    def timed(t: float) -> dict:
        entry = measure(t)
        scan.append(entry)
        return entry

    chosen = matched_scan(goal, min(round(macs, 3), 0.99), timed, steps=steps)
    return {
        "macs_scan": scan,
        "macs_plan": chosen,
        "macs_plan_matched": abs(chosen["ab"]["gap"]) <= MATCH,
        "macs_plan_gap": chosen["ab"]["gap"],
    }


def final_candidates(scan: list[dict], most: int = FINAL_CANDIDATES) -> list[dict]:
    """The MACs plans timed again in the final run: the scan's closest to the latency plan (by
    the gap measured in its own A/B run) on each side, then the next closest, ``most`` at most
    (the final run picks the one closest there: a match made minutes earlier can drift)."""
    by_gap = sorted(scan, key=lambda e: (abs(e["ab"]["gap"]), e["macs_target"]))
    slow = [e for e in by_gap if e["ab"]["gap"] > 0][:1]
    fast = [e for e in by_gap if e["ab"]["gap"] <= 0][:1]
    chosen = sorted(slow + fast, key=lambda e: abs(e["ab"]["gap"]))
    chosen += [e for e in by_gap if e not in chosen]
    return chosen[:most]


def rematch(ratios: list[float], latency_ratio: float) -> int:
    """Index of the candidate whose final ratio is closest to the latency plan's (the lower
    ratio on a tie: the faster plan)."""
    return min(range(len(ratios)), key=lambda i: (abs(ratios[i] - latency_ratio), ratios[i]))


def rematch_row(row: dict, candidates: list[dict], ratios: list[float], latency_ratio: float) -> int:
    """Make the candidate closest to the latency plan in one interleaved run (``ratios``, the
    candidates' in order; ``latency_ratio``, the latency plan's) the row's MACs plan; its index."""
    best = rematch(ratios, latency_ratio)
    row["macs_plan"] = candidates[best]
    row["macs_plan_matched"] = abs(ratios[best] - latency_ratio) <= MATCH
    return best


def refined_target(
    final: Sequence[tuple[float, float]], tried: Collection[float], *, tol: float = MATCH
) -> float | None:
    """One more MACs target to prune and time when the final run matched none: ``final``, each
    candidate's (MACs target, its ratio minus the latency plan's in the final run). Interpolated
    to a gap of 0 between the closest too slow and the closest fast enough; when all lie on one
    side (the machine's state moved every plan alike since the scan), extrapolated from the two
    nearest (slope within ``SLOPE``; one: slope 1). None when one is within ``tol`` already, or
    the MACs grid (3 decimals) gives nothing not ``tried``. Blind to fidelity: latency only."""
    if not final or min(abs(g) for _, g in final) <= tol:
        return None
    slow = [p for p in final if p[1] > 0]
    fast = [p for p in final if p[1] <= 0]
    if slow and fast:
        (t1, g1), (t0, g0) = min(slow, key=lambda p: p[1]), max(fast, key=lambda p: p[1])
        t = t0 + (t1 - t0) * -g0 / (g1 - g0)
    else:
        near = sorted(final, key=lambda p: abs(p[1]))[:2]
        (ta, ga) = near[0]
        slope = (near[1][1] - ga) / (near[1][0] - ta) if len(near) == 2 and near[1][0] != ta else 1.0
        t = ta - ga / min(max(slope, SLOPE[0]), SLOPE[1])
    t = round(min(max(t, LO), HI), 3)
    return None if t in {round(x, 3) for x in tried} else t


def grouped_final(triples: Sequence[dict], pair: dict | None = None) -> dict:
    """The final run's timings from one interleaved run per MACs candidate of (original, candidate,
    latency plan) -- the scan's measurement, each ``measure_models(...).to_dict()`` -- and the
    answers-kept plan's (original, kept) ``pair``, in the layout of one run of them all
    (``models``: the original, the latency plan, the candidates in order, the kept plan): the
    original's and the latency plan's values are the median over the triples (the latency plan's
    p10-p90: the lowest p10 and the highest p90 among them), each candidate's and the kept plan's
    from its own run. Few compiled models per run, as prune's A/B: a many-model run measured
    MobileNetV2 and EfficientNet-B0 35% slower than the runs of two or three minutes before."""
    if not triples:
        raise ValueError("grouped_final needs at least one (original, candidate, latency plan) run")
    runs = [*triples, *([pair] if pair else [])]

    def med(values: Sequence[float]) -> float:
        return float(np.median(np.asarray(values, dtype=np.float64)))

    original = {
        "model": triples[0]["models"][0]["model"],
        "ratio": 1.0,
        "ratio_p10": 1.0,
        "ratio_p90": 1.0,
        "latency_s": med([r["models"][0]["latency_s"] for r in runs]),
        "median_s": med([r["models"][0]["median_s"] for r in runs]),
        "median_ratio": 1.0,
        "precision": triples[0]["models"][0]["precision"],
    }
    lat = [t["models"][2] for t in triples]
    latency_plan = {
        "model": lat[0]["model"],
        "ratio": med([m["ratio"] for m in lat]),
        "ratio_p10": min(m["ratio_p10"] for m in lat),
        "ratio_p90": max(m["ratio_p90"] for m in lat),
        "latency_s": med([m["latency_s"] for m in lat]),
        "median_s": med([m["median_s"] for m in lat]),
        "median_ratio": med([m["median_ratio"] for m in lat]),
        "precision": lat[0]["precision"],
    }
    models = [original, latency_plan, *(t["models"][1] for t in triples), *([pair["models"][1]] if pair else [])]
    return {
        "models": models,
        "rounds": min(r["rounds"] for r in runs),
        "runs_per_round": min(r["runs_per_round"] for r in runs),
        "settings": triples[0]["settings"],
        "groups": len(runs),
        "gaps": [t["models"][1]["ratio"] - t["models"][2]["ratio"] for t in triples],
    }
