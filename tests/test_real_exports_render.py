"""The real-exports benchmark's Markdown and the README's summary table are rendered from its
recorded JSON (tools/real_exports_report.py, split from bench_real_exports.py in 41e5844): the
recorded files must be what the renderer makes of the recorded results, so a change to either
(or to the renderer) that leaves the other behind fails here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bench_real_exports as bench  # noqa: E402
import real_exports_report as report  # noqa: E402


def _saved() -> dict:
    return json.loads((ROOT / "benchmarks" / "real_exports.json").read_text())


def test_the_recorded_markdown_is_the_render_of_the_recorded_json() -> None:
    saved = _saved()
    md = (ROOT / "benchmarks" / "real_exports.md").read_text()
    assert report.NOTES in md
    meta = saved["meta"]
    status = "" if meta.get("complete") else f"\n**Unfinished run**: results up to {meta.get('finished')}.\n"
    assert md.split(report.NOTES, 1)[0] == report.render(saved["results"], meta, bench.CORPUS) + status + "\n"


def test_the_readme_table_is_the_summary_of_the_recorded_json() -> None:
    saved = _saved()
    rows = [line for line in report.summary(saved["results"], saved["meta"]).splitlines() if line.startswith("|")]
    readme = (ROOT / "README.md").read_text()
    assert len(rows) > 10 and [r for r in rows if r not in readme] == []
