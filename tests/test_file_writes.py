"""Replacing files without losing any: a failed overwrite puts back every file it replaced
(model + external data, IR .xml/.bin), a killed save's hidden copies are dealt with by the next
run, and Ctrl-C as the outputs are moved in waits for the last one (onnxprune/file_writes.py;
links and file names: test_file_writes_paths.py)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from saving_helpers import wide_model

import onnxprune
from onnxprune import cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _refuse_move_of(monkeypatch: pytest.MonkeyPatch, module: object, staged_name: str) -> None:
    """Make the move of the staged file named ``staged_name`` fail (a kept copy being put back,
    whose name differs, still moves)."""
    import errno
    import os

    real_replace = os.replace

    def refuse(src, dst):
        name = os.path.basename(str(src))
        if name == staged_name or (name.endswith(f"-{staged_name}") and "-kept" not in name):
            raise PermissionError(errno.EACCES, "Permission denied", src)
        real_replace(src, dst)

    monkeypatch.setattr(module.os, "replace", refuse)  # type: ignore[attr-defined]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
def test_a_failed_overwrite_of_a_model_and_its_data_file_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: bool
) -> None:
    import errno
    import os

    from onnxprune import saving
    from onnxprune.errors import WriteError

    old, new = wide_model(), onnx.load(FIXTURES / "digits_cnn.onnx")
    destination = tmp_path / "m.onnx"
    onnxprune.save(old, destination, external_data=True)
    before = _files(tmp_path)
    assert sorted(before) == ["m.onnx", "m.onnx.data"] and len(before["m.onnx.data"]) > 100_000
    if not links:  # a file system without hard links: the previous files are renamed aside instead

        def no_link(*args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    with monkeypatch.context() as m:
        _refuse_move_of(m, saving, "m.onnx")
        with pytest.raises(WriteError, match=rf"^{destination}: Permission denied; nothing written$"):
            onnxprune.save(new, destination, external_data=True)
    assert _files(tmp_path) == before  # both files, byte for byte, and nothing else
    assert onnx.load(str(destination)).graph.initializer[0].raw_data == old.graph.initializer[0].raw_data

    onnxprune.save(new, destination, external_data=True)  # a move that works replaces both, leaves no copy
    reference = tmp_path.parent / f"{tmp_path.name}-reference"
    reference.mkdir()
    onnxprune.save(new, reference / "m.onnx", external_data=True)
    assert _files(tmp_path) == _files(reference)


def test_a_failed_move_of_one_output_puts_back_every_file_it_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """prune over an existing model (with its data file) and report: the report's move failing
    after the model's put the previous model and data file back, not removed them."""
    from onnxprune import saving

    src = tmp_path / "in" / "wide.onnx"
    src.parent.mkdir()
    onnx.save(wide_model(), str(src))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, report = out_dir / "p.onnx", out_dir / "r.json"
    args = ["prune", str(src), "-o", str(out), "--report", str(report), "--no-verify", "-q"]
    assert cli.main([*args, "--external-data"]) == 0
    before = _files(out_dir)
    assert sorted(before) == ["p.onnx", "p.onnx.data", "r.json"]
    with monkeypatch.context() as m:
        _refuse_move_of(m, saving, "r.json")
        assert cli.main([*args, "--external-data", "--macs-target", "0.8"]) == 2
    err = capsys.readouterr().err
    assert err == f"onnxprune: error: {report}: Permission denied; nothing written\n"
    assert _files(out_dir) == before


def test_a_failed_overwrite_of_an_ir_keeps_the_previous_xml_and_bin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openvino")
    from onnxprune import openvino_ir, saving
    from onnxprune.errors import WriteError

    xml = tmp_path / "m.xml"
    openvino_ir.convert_to_ir(onnx.load(FIXTURES / "digits_cnn.onnx"), xml)
    before = _files(tmp_path)
    assert sorted(before) == ["m.bin", "m.xml"]
    with monkeypatch.context() as m:
        _refuse_move_of(m, saving, "m.xml")
        with pytest.raises(WriteError, match=rf"^{xml}: Permission denied; nothing written$"):
            openvino_ir.convert_to_ir(wide_model(), xml)
    assert _files(tmp_path) == before


def test_outputs_os_failures_are_write_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs.add_text and Outputs.commit raised UsageError for a full disk or a failed move,
    where add_written and the model's staging raise WriteError (an OSError naming the destination)."""
    import errno
    import os

    from onnxprune import saving
    from onnxprune.errors import UsageError, WriteError

    report = tmp_path / "r.json"

    def full_disk(path, mode="r", *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    with saving.Outputs() as outputs:
        with monkeypatch.context() as m:
            m.setattr(saving, "open", full_disk, raising=False)
            with pytest.raises(WriteError) as caught:
                outputs.add_text(str(report), "{}")
    assert not isinstance(caught.value, UsageError)
    assert str(caught.value) == f"{report}: No space left on device; nothing written"
    assert (caught.value.filename, caught.value.errno) == (str(report), errno.ENOSPC)

    with saving.Outputs() as outputs:
        outputs.add_text(str(report), "{}")
        with monkeypatch.context() as m:
            _refuse_move_of(m, saving, "r.json")
            with pytest.raises(WriteError) as caught:
                outputs.commit()
    assert not isinstance(caught.value, UsageError)
    assert (caught.value.filename, caught.value.errno) == (str(report), errno.EACCES)
    assert os.listdir(tmp_path) == []


_KILLED_SAVE = """
import os, sys
import onnx, onnxprune
from onnxprune import file_writes

when, new, destination = sys.argv[1:4]
if "no-links" in when:
    def no_link(*args, **kwargs):
        raise OSError(1, "Operation not permitted")
    os.link = no_link
moves = []
real_replace = file_writes._replace

def replace(staged, target):
    moves.append(target)
    if when.startswith("second-move") and len(moves) == 2:
        os._exit(9)  # killed between the data file's move and the model's
    real_replace(staged, target)

file_writes._replace = replace
if when == "finish":
    file_writes.Replacement.finish = lambda self: os._exit(9)  # killed after every move, before removing the copies
onnxprune.save(onnx.load(new), destination, external_data=True)
"""


def _killed_save(tmp_path: Path, when: str) -> tuple[Path, dict[str, bytes]]:
    """m.onnx + m.onnx.data saved, then a save of another model over them by a process killed
    at ``when``: the genuine leftover state. Returns the destination and the files before."""
    import subprocess
    import sys

    destination = tmp_path / "m.onnx"
    onnxprune.save(wide_model(), destination, external_data=True)
    before = _files(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_SAVE, when, str(FIXTURES / "digits_cnn.onnx"), str(destination)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 9, done.stderr
    return destination, before


def _kept(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "-kept" in p.name)


@pytest.mark.parametrize("when", ["second-move", "second-move-no-links"])
def test_a_save_killed_half_way_is_undone_by_the_next_run(tmp_path: Path, when: str) -> None:
    """A save killed between the data file's move and the model's left the new data file beside
    the old model (which no longer loads) and hidden copies nothing dealt with. The next write
    there sees the copies of a dead process, finds the change incomplete and puts every
    previous file back, saying so."""
    from onnxprune.file_writes import recover_leftovers

    destination, before = _killed_save(tmp_path, when)
    kept = _kept(tmp_path)
    assert len(kept) == 2 and (tmp_path / "m.onnx.data").read_bytes() != before["m.onnx.data"]
    assert len(list(tmp_path.glob(".onnxprune-*-staged-*"))) == 1  # the killed run's staging folder
    said = recover_leftovers([str(destination)])
    assert _files(tmp_path) == before  # byte for byte, and no copy or staging folder left
    assert len(said) == 3 and any("put back its previous version" in s and "m.onnx.data" in s for s in said)
    assert all("was stopped" in s for s in said)
    onnx.load(str(destination))  # the old model with its own data: loads again


def test_a_save_killed_after_its_moves_is_completed_by_the_next_run(tmp_path: Path) -> None:
    """Killed after every move, before removing the copies: the replacement completed, so the
    next run removes the copies (library: a LeftoverWarning; the new files stay)."""
    from onnxprune.errors import LeftoverWarning

    destination, before = _killed_save(tmp_path, "finish")
    assert len(_kept(tmp_path)) == 2
    after_kill = {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.startswith(".onnxprune-")}
    assert after_kill != before
    with pytest.warns(LeftoverWarning) as caught:
        onnxprune.save(onnx.load(FIXTURES / "digits_cnn.onnx"), destination, external_data=True)
    said = [str(w.message) for w in caught]
    assert len(said) == 3 and sum("its previous version, left by process" in s for s in said) == 2
    assert any(s.startswith(f"{destination}: removed .onnxprune-") for s in said)
    assert _files(tmp_path) == after_kill  # the same new model written again, and no copy left


def test_your_files_named_like_a_killed_runs_leftovers_are_left_alone(tmp_path: Path) -> None:
    """The cleanup of a killed run's leftovers went by the name alone: a file of yours named
    '.onnxprune-PID-0-notes.txt' or a folder '.onnxprune-PID-staged-x' (PID a process that is
    gone) was deleted, and '.onnxprune-PID-kept0-m.onnx' moved over a missing m.onnx. Now only
    names that carry their folder's and PID's tag (own_prefix) are the run's own; the run's
    real leftovers are still dealt with."""
    import subprocess
    import sys

    from onnxprune.file_writes import own_prefix, recover_leftovers

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pid = gone.pid
    yours = {
        f".onnxprune-{pid}-0-notes.txt": b"notes",
        f".onnxprune-{pid}-kept0-m.onnx": b"yours",  # m.onnx is missing: it was moved over it
        f".onnxprune-{pid}-000000000000-copy-r.json": b"{}",  # a tag, but not this folder's
    }
    for name, data in yours.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / f".onnxprune-{pid}-staged-x").mkdir()
    (tmp_path / f".onnxprune-{pid}-staged-x" / "keep.txt").write_text("yours")
    staged = tmp_path / f"{own_prefix(str(tmp_path), pid)}1-r.json"  # what that run staged
    staged.write_text("{}")
    said = recover_leftovers([str(tmp_path / "m.onnx"), str(tmp_path / "r.json")])
    assert said == [f"{staged}: removed, a file process {pid} was staging when it was stopped"]
    assert {n: (tmp_path / n).read_bytes() for n in yours} == yours
    assert (tmp_path / f".onnxprune-{pid}-staged-x" / "keep.txt").read_text() == "yours"
    assert not (tmp_path / "m.onnx").exists() and not staged.exists()


def test_copies_of_a_live_process_are_left_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    from onnxprune.file_writes import own_prefix, recover_leftovers

    (tmp_path / "m.onnx").write_bytes(b"new")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            kept = f"{own_prefix(str(tmp_path), live.pid)}kept0-m.onnx"
            (tmp_path / kept).write_bytes(b"old")
            assert recover_leftovers([str(tmp_path / "m.onnx")]) == []
            assert sorted(p.name for p in tmp_path.iterdir()) == [kept, "m.onnx"]
        finally:
            live.kill()


def test_the_cli_reports_what_it_did_with_a_killed_runs_copies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    destination, _ = _killed_save(tmp_path, "second-move")
    report = tmp_path / "r.json"
    args = ["prune", str(FIXTURES / "residual.onnx"), "-o", str(destination), "--external-data", "--no-verify"]
    assert cli.main([*args, "-q", "--report", str(report)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith(f"onnxprune: warning: {tmp_path}/") for line in err)
    assert any("put back its previous version" in line for line in err)
    assert json.loads(report.read_text())["leftovers"] == [line.removeprefix("onnxprune: warning: ") for line in err]
    assert _kept(tmp_path) == []


def test_ctrl_c_while_outputs_are_moved_into_place_waits_for_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C (SIGINT) as prune's outputs were moved into place (here: as the previous files'
    copies are removed, the last step) said 'onnxprune: interrupted' of a run whose files were
    all written, and left those copies beside them for the next run. It is now held until every
    file is in place: all written, no copy left, and the message says the outputs were written."""
    import json
    import os
    import signal

    from onnxprune import file_writes

    src = tmp_path / "in" / "wide.onnx"
    src.parent.mkdir()
    onnx.save(wide_model(), str(src))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, report = out_dir / "p.onnx", out_dir / "r.json"
    out.write_bytes(b"previous model")
    report.write_text("previous report")
    real_finish = file_writes.Replacement.finish

    def ctrl_c_then_finish(self: file_writes.Replacement) -> None:
        # What Ctrl-C does in the main thread: Python calls the SIGINT handler (a real signal
        # to the test process also reaches the runtimes' threads: it crashed the suite once).
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        real_finish(self)

    monkeypatch.setattr(file_writes.Replacement, "finish", ctrl_c_then_finish)
    # Python's own Ctrl-C handler, as in a terminal: a test run started in the background by a
    # non-interactive shell (`cmd &`) inherits SIGINT ignored, and prune then rightly holds nothing.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        args = ["prune", str(src), "-o", str(out), "--report", str(report), "--ratio", "0.5", "--no-verify", "-q"]
        assert cli.main(args) == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's handler is back
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert capsys.readouterr().err == (
        "onnxprune: interrupted; the outputs were written (Ctrl-C came as they were moved into place)\n"
    )
    assert sorted(os.listdir(out_dir)) == ["p.onnx", "r.json"]  # no copy of the previous files left
    assert json.loads(report.read_text())["output"] == str(out)
    assert len(onnx.load(str(out)).graph.node) == len(wide_model().graph.node)


@pytest.mark.parametrize("inherited", ["SIG_IGN", "SIG_DFL"])
def test_a_run_with_sigint_ignored_or_default_replaces_its_outputs(tmp_path: Path, inherited: str) -> None:
    """Started by a non-interactive shell (`cmd &`) a run inherits SIGINT ignored; an
    application may leave it at SIG_DFL. Neither is callable: a run that called the previous
    handler failed with "internal error: TypeError: 'Handlers' object is not callable" (the
    test did, before 0610f27). The writes hold nothing then and leave the handler as it was:
    a run replacing its outputs exits 0 with both files in place (checked on main 2026-12-01:
    passes; a guard)."""
    import signal
    import subprocess
    import sys

    from onnxprune import file_writes

    handler = getattr(signal, inherited)
    previous = signal.signal(signal.SIGINT, handler)
    try:
        with file_writes.holding_interrupts():
            assert signal.getsignal(signal.SIGINT) is handler
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
    src = tmp_path / "wide.onnx"
    onnx.save(wide_model(), str(src))
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    out.write_bytes(b"previous model")
    report.write_text("previous report")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxprune",
            "prune",
            str(src),
            "-o",
            str(out),
            "--report",
            str(report),
            "--ratio",
            "0.5",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, handler),
    )
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert onnx.load(str(out)) and report.read_text().startswith("{")
