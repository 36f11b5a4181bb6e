"""Every long phase of a fidelity-budgeted run with a sequential refit is on the progress
callback from its start (issue 12 item 5): loading and the analysis (one step each), the data
criterion's scores, the sensitivity trials (before the runner's own runs), the search (before
its first step, which also runs the original for the cross-fitted references) and the final
judgement of the chosen plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

import onnxprune
from onnxprune.testing import GraphBuilder


def _chain() -> onnx.ModelProto:
    """x [N, 3, 8, 8] -> Conv+Relu (8) -> Conv+Relu (8) -> pool -> Gemm: two units, two levels."""
    b = GraphBuilder(opset=17, seed=11)
    h = b.input("x", [None, 3, 8, 8])
    for _ in range(2):
        h = b.op("Relu", b.conv(h, 8))
    b.output(b.gemm(b.op("Flatten", b.op("GlobalAveragePool", h), axis=1), 8, 4))
    return b.build()


def test_every_long_phase_reports_from_its_start(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(_chain(), model)
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(np.float32))
    heard: list[tuple[str, int, int]] = []
    onnxprune.prune(
        model,
        calibration=str(cal),
        criterion="reconstruction",
        min_fidelity=0.9,
        reconstruct=True,
        reconstruct_from="pruned",
        progress=lambda stage, done, total: heard.append((stage, done, total)),
    )
    stages = list(dict.fromkeys(h[0] for h in heard))  # in the order first heard
    assert stages[:7] == ["load", "analysis", "calibration", "criterion", "sensitivity", "search", "final judgement"]
    of = {s: [(d, t) for st, d, t in heard if st == s] for s in stages}
    # Loading and the analysis are shown before any data is read: one step each, ended before
    # the calibration starts.
    assert heard[:4] == [("load", 0, 1), ("load", 1, 1), ("analysis", 0, 1), ("analysis", 1, 1)]
    assert of["load"] == [(0, 1), (1, 1)] and of["analysis"] == [(0, 1), (1, 1)]
    # The criterion: a step per calibration sample run, then per source layer scored.
    total = of["criterion"][0][1]
    assert total > 3 and of["criterion"] == [(i, total) for i in range(total + 1)]
    # Two units of 8 channels at the three default ratios: 6 trials, the bar shown at 0 first.
    assert of["sensitivity"][0] == (0, 6) and of["sensitivity"][-1] == (6, 6)
    steps = of["search"][-1][1]
    assert of["search"][0] == (0, steps) and of["search"][-1] == (steps, steps) and steps >= 1
    assert of["final judgement"] == [(0, 1), (1, 1)]
    # The final judgement comes after the search's last step and before the result is built.
    last_search = max(i for i, h in enumerate(heard) if h[0] == "search")
    assert heard.index(("final judgement", 0, 1)) > last_search
