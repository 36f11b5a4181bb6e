"""A report's texts are written once, in the command line's words, and read by each audience in
its own: a library caller sees the API's option names (calibration, verification_inputs), the
CLI its flags (--calibration, --inputs), as errors already do."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from cli_helpers import run_cli

import onnxprune
from onnxprune.errors import Message
from onnxprune.quant_report import QuantizeReport

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RANDOM_NOTE = "fidelity was measured on seeded random inputs, not real data: give {} or {} for meaningful numbers"


def test_a_library_callers_report_names_the_apis_options(tmp_path: Path) -> None:
    """Before: prune(m, ratio=0.3).report.notes said "give --inputs or --calibration", and its
    criterion_reason "a budget (--ratio) without --criterion", flags the caller never gave."""
    report = onnxprune.prune(str(FIXTURES / "digits_cnn.onnx"), ratio=0.3).report
    api_note = RANDOM_NOTE.format("verification_inputs", "calibration")
    assert report.notes == (api_note,)
    assert report.criterion_reason == "default: a budget (ratio) without criterion means l2"
    data = report.to_dict()
    assert data["notes"] == [api_note] and type(data["notes"][0]) is str
    assert data["criterion_reason"] == "default: a budget (ratio) without criterion means l2"
    assert json.loads(report.to_json())["notes"] == [api_note]
    # the command line's words, kept once: what the CLI shows
    cli_note = RANDOM_NOTE.format("--inputs", "--calibration")
    assert report.notes[0].cli_text == cli_note
    cli = report.to_dict(words="cli")
    assert cli["notes"] == [cli_note]
    assert cli["criterion_reason"] == "default: a budget (--ratio) without --criterion means l2"
    copy = pickle.loads(pickle.dumps(report.notes[0]))  # a note crossing a process keeps both
    assert copy == api_note and copy.cli_text == cli_note


def test_the_cli_shows_its_flags(tmp_path: Path) -> None:
    """A guard (passes on main too): the command line keeps its flags, in the text and --report."""
    report = tmp_path / "r.json"
    p = run_cli("prune", FIXTURES / "digits_cnn.onnx", "-o", tmp_path / "o.onnx", "--ratio", "0.3", "--report", report)
    assert p.returncode == 0, p.stderr
    assert f"note: {RANDOM_NOTE.format('--inputs', '--calibration')}" in p.stdout.splitlines()
    data = json.loads(report.read_text())
    assert data["notes"] == [RANDOM_NOTE.format("--inputs", "--calibration")]
    assert data["criterion_reason"] == "default: a budget (--ratio) without --criterion means l2"


def test_quantize_reports_name_quantize_config_options() -> None:
    """QuantizeConfig's held-out samples are evaluation_inputs (PruneConfig's --inputs are
    verification_inputs)."""
    text = "16 held-out samples: every 4th sample of c.npz, never used to calibrate (give --inputs for your own)"
    report = QuantizeReport(
        model="m.onnx",
        output=None,
        format="onnx",
        backend="onnx",
        preset="performance",
        fast_bias_correction=True,
        subset_size=300,
        calibration_samples=48,
        evaluation_samples=16,
        evaluation=text,
        quantized_layers=(),
        float_layers=(),
        ignored=(),
        runtime="onnxruntime",
        fidelity=(),
        size_before=1,
        size_after=1,
        notes=("--max-drop 0.01 kept 2 layers in float",),
    )
    assert report.evaluation == text.replace("--inputs", "evaluation_inputs")
    assert report.to_dict()["notes"] == ["max_drop 0.01 kept 2 layers in float"]
    assert report.to_dict(words="cli")["evaluation"] == text


def test_a_message_given_again_keeps_its_words() -> None:
    note = Message(Message("give --calibration C.npz"))
    assert note == "give calibration C.npz" and note.cli_text == "give --calibration C.npz"
