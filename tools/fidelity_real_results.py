"""The issue-12 benchmark's results file (benchmarks/fidelity_real.json): the package commit a
cell was measured on, locked read-modify-write (``--jobs 2`` workers write in turn), and the
merge of another run's cells where they are newer (``--merge-from``). Split from the runner
(tools/bench_fidelity_real.py)."""

from __future__ import annotations

import datetime
import fcntl
import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "fidelity_real"


def package_commit() -> str:
    """The last commit that changed the package (the harness and the inputs may change apart)."""
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h", "--", "onnxprune"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def update_results(fn: Callable[[dict], None]) -> None:
    """Read-modify-write of the JSON under a lock (workers of ``--jobs 2`` write in turn)."""
    path = OUT.with_suffix(".json")
    with open(Path(tempfile.gettempdir()) / f"fidelity_real.{abs(hash(str(path)))}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results()
        fn(results)
        path.write_text(json.dumps(results, indent=1))


def load_results() -> dict[str, Any]:
    path = OUT.with_suffix(".json")
    return json.loads(path.read_text()) if path.exists() else {"models": {}}


def _is_ancestor(a: str, b: str) -> bool:
    """Commit ``a`` is an ancestor of ``b`` in this repository (False when unknown)."""
    try:
        return (
            subprocess.run(
                ["git", "-C", str(ROOT), "merge-base", "--is-ancestor", a, b], capture_output=True, check=False
            ).returncode
            == 0
        )
    except OSError:
        return False


def newer(theirs: dict, ours: dict | None) -> bool:
    """``theirs`` (a row or digits cell) supersedes ``ours``: a later package commit, else
    (the same commit, or commits neither of which contains the other) a later date."""
    if ours is None:
        return True
    a, b = str(ours.get("commit") or ""), str(theirs.get("commit") or "")
    if a and b and a != b:
        if _is_ancestor(a, b):
            return True
        if _is_ancestor(b, a):
            return False
    return str(theirs.get("date") or "") > str(ours.get("date") or "")


def _more_alone(row: dict, mine: dict | None) -> bool:
    """The same run as ``mine`` (commit and date) with more of its runs repeated alone (``--alone``)."""

    def alone(r: dict) -> int:
        return sum(1 for c in (r.get("targets") or {}).values() if "alone" in c)

    same = mine is not None and (row.get("commit"), row.get("date")) == (mine.get("commit"), mine.get("date"))
    return same and alone(row) > alone(mine)  # type: ignore[arg-type]


def merge_results(results: dict, other: dict, source: str) -> list[str]:
    """Copy into ``results`` every (model, row) cell and digits line of ``other`` that is
    newer (see ``newer``); returns what was taken, one line each."""
    taken = []
    for model, entry in other.get("models", {}).items():
        mine = results["models"].setdefault(model, {"rows": {}})
        if entry.get("inputs") and not mine.get("inputs"):
            mine["inputs"] = entry["inputs"]
        for name, row in entry.get("rows", {}).items():
            if row.get("commit") and (newer(row, mine["rows"].get(name)) or _more_alone(row, mine["rows"].get(name))):
                mine["rows"][name] = {**row, "merged_from": row.get("merged_from", source)}
                taken.append(f"{model} / {name}: `{row.get('commit')}` {row.get('date', '')}")
    for name, cell in (other.get("digits") or {}).items():
        if cell.get("commit") and newer(cell, results.setdefault("digits", {}).get(name)):
            results["digits"][name] = {**cell, "merged_from": cell.get("merged_from", source)}
            taken.append(f"digits / {name}: `{cell.get('commit')}` {cell.get('date', '')}")
    return taken
