"""The hand-written end of the latency benchmark's report (benchmarks/latency.md): the reading of
each window below a marker line, kept as it is when tools/bench_latency.py report writes the
generated part above it again."""

from __future__ import annotations

from pathlib import Path

__all__ = ["READING_HEADING", "READING_MARKER", "hand_written", "with_reading"]

# The report's Markdown ends with the hand-written reading of each window: everything from this
# line to the end of the file is written by hand and kept as it is when the report is written
# again (the generated part above it is replaced).
READING_MARKER = (
    "<!-- Reading sections: written by hand below this line; tools/bench_latency.py report keeps them "
    "when it writes this file again -->"
)
READING_HEADING = "## Reading"  # a file from before the marker: its hand-written part starts here


def hand_written(md: Path) -> str:
    """The hand-written end of an earlier report ``md``: the text after ``READING_MARKER``, or in
    a file from before the marker, from its first ``READING_HEADING`` line; "" when there is no
    such file or part."""
    try:
        text = md.read_text()
    except FileNotFoundError:
        return ""
    _, marker, tail = text.partition(READING_MARKER)
    if marker:
        return tail.strip("\n")
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(READING_HEADING):
            return "\n".join(lines[i:]).strip("\n")
    return ""


def with_reading(generated: list[str], reading: str) -> str:
    """The report's Markdown: the ``generated`` lines, ``READING_MARKER``, then the hand-written
    ``reading`` as it was."""
    body = "\n".join(generated).rstrip("\n")
    return f"{body}\n\n{READING_MARKER}\n" + (f"\n{reading}\n" if reading else "")
