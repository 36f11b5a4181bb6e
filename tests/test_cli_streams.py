"""The CLI's streams: ``--json -`` / ``--report -`` / ``-o -`` put the JSON or the model on stdout
alone (refused where stdout cannot take it), a warning during a run is one ``onnxprune: warning:``
line, and Ctrl-C is one line too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from cli_helpers import one_line_error, run_cli

from onnxprune import cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_a_json_output_of_dash_goes_to_stdout_alone(tmp_path: Path) -> None:
    # `--json -` wrote a file named '-' in the working folder, and the human report went to
    # stdout: a script piping into a JSON reader had to use a temporary file
    explained = run_cli("explain", "fixtures/residual.onnx", "--json", "-")
    assert explained.returncode == 0, explained.stderr
    data = json.loads(explained.stdout)  # the JSON and nothing else
    assert data["model"] == "fixtures/residual.onnx" and data["layers"]
    assert not Path("-").exists()
    out = tmp_path / "p.onnx"
    pruned = run_cli("prune", "fixtures/residual.onnx", "-o", out, "--report", "-")
    assert pruned.returncode == 0, pruned.stderr
    report = json.loads(pruned.stdout)
    assert report["channels_removed"] > 0 and report["output"] == str(out) and out.is_file()
    failed = run_cli("prune", "fixtures/residual.onnx", "-o", tmp_path / "q.onnx", "--report", "-", "--ratio", "2")
    assert (failed.returncode, failed.stdout) == (2, "")  # an error: nothing on stdout


def test_dash_output_writes_the_model_to_stdout_alone(tmp_path: Path) -> None:
    """-o - wrote a file named '-' (while --report - means stdout). Now the model's bytes go to
    stdout, alone (no text report), byte-identical to -o FILE; the report says "output": "-"."""

    model = str(FIXTURES / "residual.onnx")
    done = subprocess.run(
        [sys.executable, "-m", "onnxprune", "prune", model, "-o", "-", "--report", "r.json"],
        capture_output=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no file named '-', nothing staged left
    assert json.loads((tmp_path / "r.json").read_text())["output"] == "-"
    assert run_cli("prune", model, "-o", tmp_path / "ref.onnx", "-q").returncode == 0
    assert done.stdout == (tmp_path / "ref.onnx").read_bytes()
    assert onnx.load_from_string(done.stdout).graph.node


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "-", "--report", "-"], "-o - and --report -: both would go to stdout; give one of them a file name"),
        (
            ["-o", "-", "--external-data"],
            "-o -: --external-data writes two files (the model and its .data); stdout takes one: give -o OUT.onnx",
        ),
    ],
)
def test_dash_output_refusals(tmp_path: Path, args: list, message: str) -> None:

    p = run_cli("prune", FIXTURES / "residual.onnx", *args)
    assert one_line_error(p) == f"onnxprune: error: {message}" and p.stdout == ""
    p = run_cli("convert", FIXTURES / "residual.onnx", "-o", "-")
    assert one_line_error(p) == (
        "onnxprune: error: -o -: an OpenVINO IR is two files (the .xml and its .bin); stdout takes one: give -o OUT.xml"
    )


def test_dash_output_to_a_terminal_is_refused(tmp_path: Path) -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "onnxprune", "prune", str(FIXTURES / "residual.onnx"), "-o", "-"],
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 2 and done.stderr == (
        "onnxprune: error: -o -: stdout is a terminal, and a model is binary; redirect it (> OUT.onnx), pipe it, "
        "or give -o OUT.onnx\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_dash_output_past_the_protobuf_limit_is_refused_before_any_output_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A model that needs external data (two files) cannot go to stdout: one line, exit 2, and
    the run's other outputs are not written either (all or none)."""
    from onnxprune import saving

    monkeypatch.setattr(saving, "PROTOBUF_LIMIT", 1000)  # the residual fixture is past it
    code = cli.main(["prune", str(FIXTURES / "residual.onnx"), "-o", "-", "--report", str(tmp_path / "r.json")])
    out, err = capsysbinary.readouterr()
    assert code == 2 and out == b""
    assert err.decode() == (
        "onnxprune: error: -o -: the model needs external data (past the 2 GB protobuf limit: a model file and its "
        ".data), and stdout takes one file: give -o OUT.onnx; nothing written\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_dash_output_keeps_a_validation_functions_prints_off_stdout(tmp_path: Path) -> None:
    """A user's --validate function that prints (or any library writing to file descriptor 1)
    would corrupt the model's bytes on stdout: while the run lasts stdout goes to stderr."""

    script = tmp_path / "v.py"
    script.write_text('def score(candidate):\n    print("a user\'s print")\n    return 1.0\n')
    done = subprocess.run(
        [sys.executable, "-m", "onnxprune", "prune", str(FIXTURES / "digits_cnn.onnx"), "-o", "-"]
        + ["--calibration", str(FIXTURES / "digits_calibration.npz"), "--validate", f"{script}:score"]
        + ["--max-drop", "0.01"],
        capture_output=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert b"a user's print" in done.stderr and b"a user's print" not in done.stdout
    assert onnx.load_from_string(done.stdout).graph.node
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.py"]


def test_a_library_warning_during_a_run_is_one_onnxprune_line(tmp_path: Path) -> None:
    """A LeftoverWarning raised inside a run (copies a killed run left beside an output, found
    when the outputs are committed, after the CLI's early sweep) printed in Python's format
    (FILE:LINE: LeftoverWarning: ... and the source line). The CLI now prints each library
    warning as one line 'onnxprune: warning: ...' (another package's with its category); the
    library still raises the warning."""
    import os

    from onnxprune.file_writes import own_prefix

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that is no more: its copies are a killed run's
    kept = f"{own_prefix(str(tmp_path), gone.pid)}kept0-p.onnx"  # the name that run would have made
    out = tmp_path / "p.onnx"
    out.write_bytes(b"previous")
    plant = tmp_path / "plant.py"  # called when the run loads its rules: after the early sweep
    plant.write_text(
        "import os\n"
        "import warnings\n"
        "def plant(registry):\n"
        "    warnings.warn('another package\\'s warning,\\n on two lines', RuntimeWarning)\n"
        f"    with open({str(tmp_path / kept)!r}, 'wb') as f:\n"
        "        f.write(b'older')\n"
    )
    p = run_cli("prune", FIXTURES / "residual.onnx", "-o", out, "--rules", f"{plant}:plant", "--no-verify", "-q")
    assert p.returncode == 0, p.stderr
    assert p.stderr == (
        "onnxprune: warning: RuntimeWarning: another package's warning, on two lines\n"
        f"onnxprune: warning: {out}: removed {kept}, its previous version, left by "
        f"process {gone.pid}, which was stopped after it had replaced all its files\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["p.onnx", "plant.py"]


def test_ctrl_c_outside_the_run_is_one_line_too(tmp_path: Path) -> None:
    """A Ctrl-C after the run returned (leaving main's own blocks, as the process exits) printed
    Python's traceback of KeyboardInterrupt: main says 'onnxprune: interrupted', exit 130."""
    code = (
        "import sys\n"
        "from onnxprune import cli\n"
        "def ctrl_c(args):\n"
        "    raise KeyboardInterrupt\n"
        "cli._json_to_stdout = ctrl_c\n"
        f"raise SystemExit(cli.main(['analyze', {str(FIXTURES / 'residual.onnx')!r}, '-q']))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stderr) == (130, "onnxprune: interrupted\n")


def test_ctrl_c_while_python_exits_after_the_run_changes_nothing(tmp_path: Path) -> None:
    """Ctrl-C in the 0.2 s Python takes to shut down after a run (onnxruntime, OpenVINO loaded)
    killed the process by SIGINT (exit -2, a finished run's code lost) or printed a
    KeyboardInterrupt traceback: once main returned, SIGINT is ignored."""
    script = tmp_path / "exiting.py"
    script.write_text(
        "import atexit, os, runpy, signal, sys\n"
        "atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))  # Ctrl-C as the process exits\n"
        f"sys.argv = ['onnxprune', 'analyze', {str(FIXTURES / 'residual.onnx')!r}, '-q']\n"
        "runpy.run_module('onnxprune', run_name='__main__')\n"
    )
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stderr) == (0, "")
