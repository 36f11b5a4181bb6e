"""tools/latency_bench_report.py: the latency benchmark's report keeps the hand-written reading at
the end of benchmarks/latency.md when it writes the file again, while the generated part above it
follows the rows. Nothing is timed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import latency_bench_report as report  # noqa: E402


class _Settings:
    def to_dict(self) -> dict:
        return {"precision": "f32"}


def _row(ratio: float) -> dict:
    """A benchmark row without a final run: the latency plan measured at ``ratio`` in prune."""
    return {
        "model": "pplcnet",
        "path": "/corpus/pplcnet.onnx",
        "target": 0.7,
        "reconstruct": False,
        "prune_seconds": 26.0,
        "latency_plan": {
            "latency": {
                "measured_ratio": ratio,
                "measured_p10": ratio - 0.01,
                "measured_p90": ratio + 0.01,
                "predicted_ratio": 0.664,
                "precision": "f32",
                "met": True,
                "baseline_ms": 6.9,
                "attempts": [],
            },
            "macs_ratio": 0.608,
            "fidelity": 0.4375,
            "fidelity_metrics": {"out": {"metric": "top1", "value": 0.4375}},
            "cosine": 0.2120,
            "notes": [],
        },
        "macs_plan": {"macs_target": 0.576, "macs_ratio": 0.575, "fidelity": 0.4375, "cosine": 0.1727},
        "macs_scan": [],
        "macs_plan_gap": 0.001,
    }


def _write(out: Path, ratio: float) -> str:
    report.phase_report(
        [_row(ratio)], out, 0.7, settings=_Settings(), models={"pplcnet": {"kind": "corpus"}}, state=0.1
    )
    return out.with_suffix(".md").read_text()


READING = (
    "## Reading (07:54–08:24 UTC, quiet window, f32)\n"
    "\n"
    "- pplcnet: | a table | cell |\n"
    "  written by hand, kept as it is.\n"
    "\n"
    "## Reading (05:06–05:24 UTC)\n"
    "\n"
    "- the earlier window's."
)


def test_a_new_report_ends_with_the_marker_and_no_reading(tmp_path: Path) -> None:
    md = _write(tmp_path / "latency", 0.695)
    assert md.endswith(f"\n\n{report.READING_MARKER}\n")
    assert md.count(report.READING_MARKER) == 1
    assert "| pplcnet | 0.7 | 6.90 (table) | 0.695 (0.685–0.705) |" in md
    assert json.loads((tmp_path / "latency.json").read_text())["rows"][0]["model"] == "pplcnet"


def test_the_reading_below_the_marker_survives_a_new_report_whose_rows_changed(tmp_path: Path) -> None:
    out = tmp_path / "latency"
    first = _write(out, 0.695)
    out.with_suffix(".md").write_text(first + "\n" + READING + "\n")
    second = _write(out, 0.681)
    # the generated part follows the new rows ...
    assert "| pplcnet | 0.7 | 6.90 (table) | 0.681 (0.671–0.691) |" in second
    assert "0.695 (0.685–0.705)" not in second
    # ... and the hand-written part is there once, as written, after the marker
    assert second.endswith(f"{report.READING_MARKER}\n\n{READING}\n")
    assert second.count(report.READING_MARKER) == 1
    assert second.count("## Reading (07:54–08:24 UTC") == 1
    # a third report changes nothing more (no marker or blank lines pile up)
    assert _write(out, 0.681) == second


def test_a_report_from_before_the_marker_keeps_its_reading_sections(tmp_path: Path) -> None:
    # benchmarks/latency.md as recorded before the marker: generated part, then "## Reading" sections
    out = tmp_path / "latency"
    old = _write(out, 0.695).replace(f"\n\n{report.READING_MARKER}\n", "\n")
    assert report.READING_MARKER not in old
    out.with_suffix(".md").write_text(old + "\n" + READING + "\n")
    new = _write(out, 0.681)
    assert new.endswith(f"{report.READING_MARKER}\n\n{READING}\n")
    assert "0.681 (0.671–0.691)" in new and "0.695 (0.685–0.705)" not in new


def test_hand_written_reads_nothing_from_a_missing_or_unread_file(tmp_path: Path) -> None:
    assert report.hand_written(tmp_path / "none.md") == ""
    (tmp_path / "plain.md").write_text("# generated\n\n## Per model\n\n### pplcnet\n")
    assert report.hand_written(tmp_path / "plain.md") == ""


def test_held_out_rows_go_to_the_table_of_their_metric(tmp_path: Path) -> None:
    top1, det = _row(0.695), {**_row(0.681), "model": "yolo26n"}
    pair = {"n": 64, "seeds": [3, 4], "macs_target": 0.5, "only_latency": 9, "only_macs": 1}
    top1["heldout"] = {**pair, "latency": {"top1": 0.75, "cosine": 0.8}, "macs": {"top1": 0.6, "cosine": 0.7}}
    det["heldout"] = {
        **pair,
        "metric": "detection",
        "reference_detections": 70,
        "latency": {"detection": 0.25, "cosine": 0.7},
        "macs": {"detection": 0.125, "cosine": 0.6},
        "higher_latency": 2,
        "higher_macs": 7,
        "mean_difference": 0.125,
        "difference_se": 0.05,
    }
    models = {"pplcnet": {"kind": "corpus"}, "yolo26n": {"kind": "corpus"}}
    out = tmp_path / "latency"
    report.phase_report([top1, det], out, 0.7, settings=_Settings(), models=models, state=0.1)
    md = out.with_suffix(".md").read_text()
    top1_part = md[md.index("**Top-1 rows on more held-out inputs.**") : md.index("**Detection rows on more")]
    assert "| pplcnet | 64 (3–4) | 0.7500 (0.8000) | 0.500: 0.6000 (0.7000) | 9 | 1 | yes |" in top1_part
    assert "yolo26n" not in top1_part
    assert "| yolo26n | 64 (3–4) | 70 | 0.2500 (0.7000) | 0.500: 0.1250 (0.6000) | 2 | 7 | +0.1250 ± 0.0500 " in md


def test_the_headline_verdict_says_what_the_held_out_inputs_decide(tmp_path: Path) -> None:
    top1, det, plain = _row(0.695), {**_row(0.681), "model": "yolo26n"}, {**_row(0.69), "model": "digits"}
    top1["heldout"] = {"n": 1024, "only_latency": 60, "only_macs": 20}  # |40| > 2 sqrt(80)
    det["heldout"] = {"n": 256, "metric": "detection", "higher_latency": 12, "higher_macs": 9}
    lines = report.headline_table([top1, det, plain])
    # equal top-1 on the 16 evaluation crops (0.4375 both): the cosine beneath, then the held-out verdict
    assert lines[2].endswith("| equal score; cosine yes; 1024 inputs: yes |")
    assert lines[3].endswith("| equal score; cosine yes; 256 more pages: tie (within noise) |")
    assert lines[4].endswith("| equal score; cosine yes |")
    labelled = {**top1, "heldout": {"n": 512, "labelled": True, "only_latency": 5, "only_macs": 30}}
    assert report.headline_table([labelled])[2].endswith("; 512 labelled images: **no** |")
