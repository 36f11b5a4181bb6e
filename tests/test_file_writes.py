"""Replacing files without losing any: a failed overwrite puts back every file it replaced
(model + external data, IR .xml/.bin), outputs that are symbolic links are written through, and a
killed save's hidden copies are dealt with by the next run (onnxprune/file_writes.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def test_an_output_linked_to_a_process_file_is_refused_and_the_link_kept(tmp_path: Path) -> None:
    """`onnxprune explain M --json /dev/stdout > o.txt`: /dev/stdout -> /proc/self/fd/1 -> o.txt
    is a regular file, so the check passed and the rename REPLACED the /dev/stdout link with a
    regular file (as root: for the whole machine). Any link leading through /proc or /dev is
    refused now, before any work, and left as it was."""
    import os
    import subprocess
    import sys

    from onnxprune.errors import UsageError
    from onnxprune.file_writes import check_writable

    link = tmp_path / "stdout"  # a stand-in for /dev/stdout, so that a failure breaks nothing
    os.symlink("/proc/self/fd/1", link)
    with open(tmp_path / "o.txt", "w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "onnxprune", "explain", "fixtures/residual.onnx", "--json", str(link)],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2 and os.path.islink(link)  # before: 0, and the link a regular file
    assert done.stderr == (
        f"onnxprune: error: {link}: --json leads to /proc/self/fd/1 (a process's file, not a file of its own); "
        "give a file name\n"
    )
    assert (tmp_path / "o.txt").read_text() == ""
    with open(tmp_path / "x.json", "w") as f:
        fd_link = tmp_path / "fd"
        os.symlink(f"/proc/self/fd/{f.fileno()}", fd_link)
        with pytest.raises(UsageError, match=r"leads to /proc/self/fd/\d+ \(a process's file"):
            check_writable(str(fd_link), "--report")
    plain = tmp_path / "plain.json"  # a link to an ordinary file stays allowed
    os.symlink(tmp_path / "x.json", plain)
    check_writable(str(plain), "--report")


def test_outputs_that_are_links_are_written_through(tmp_path: Path) -> None:
    """An output that is a symbolic link to an ordinary file (-o p.onnx -> /data/real.onnx) was
    replaced by a regular file: the link gone, its target stale. Every output kind now writes
    through the link (as cp does): the model and its external data, the report, the IR's .xml
    and .bin; the links stay links and nothing is left beside either."""
    import json
    import os

    pytest.importorskip("openvino")
    src = tmp_path / "wide.onnx"
    onnx.save(wide_model(), str(src))
    work, data = tmp_path / "work", tmp_path / "data"
    work.mkdir()
    data.mkdir()
    names = {"p.onnx": "real.onnx", "r.json": "real.json"}
    names |= {"m.xml": "real.xml", "m.bin": "real.bin"}
    for link, target in names.items():
        (data / target).write_bytes(b"stale")
        os.symlink(f"../data/{target}", work / link)  # relative, as ln -s makes them
    args = ["prune", str(src), "-o", str(work / "p.onnx"), "--external-data", "--no-verify", "-q"]
    assert cli.main([*args, "--report", str(work / "r.json"), "--ir", str(work / "m.xml")]) == 0
    assert sorted(os.listdir(work)) == sorted([*names, "p.onnx.data"]) and all(os.path.islink(work / n) for n in names)
    assert sorted(os.listdir(data)) == sorted(names.values())  # the data file beside the link, as the model names it
    assert all((data / t).read_bytes() != b"stale" for t in names.values())
    assert json.loads((data / "real.json").read_text())["output"] == str(work / "p.onnx")
    reference = tmp_path / "reference"
    reference.mkdir()
    assert cli.main(["prune", str(src), "-o", str(reference / "p.onnx"), "--external-data", "--no-verify", "-q"]) == 0
    assert (data / "real.onnx").read_bytes() == (reference / "p.onnx").read_bytes()
    assert (work / "p.onnx.data").read_bytes() == (reference / "p.onnx.data").read_bytes()
    assert onnx.load(str(work / "p.onnx")) == onnx.load(str(reference / "p.onnx"))  # its data found through the links
    import openvino as ov

    assert ov.Core().read_model(str(work / "m.xml")).inputs[0].get_any_name() == "x"

    # The library's writers too: save (its data file beside the link, as the model names it) and write_atomic.
    from onnxprune.saving import write_atomic

    os.symlink("../data/real2.onnx", work / "q.onnx")
    (data / "real2.onnx").write_bytes(b"stale")
    onnxprune.save(wide_model(), work / "q.onnx", external_data=True)
    assert os.path.islink(work / "q.onnx") and (work / "q.onnx.data").is_file()
    loaded = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(work / "q.onnx")).graph.initializer}
    assert all(np.array_equal(loaded[t.name], onnx.numpy_helper.to_array(t)) for t in wide_model().graph.initializer)
    os.symlink(data / "t.txt", work / "t.txt")
    (data / "t.txt").write_text("stale")
    write_atomic(str(work / "t.txt"), "new")
    assert os.path.islink(work / "t.txt") and (data / "t.txt").read_text() == "new"


def test_external_data_behind_a_link_is_refused(tmp_path: Path) -> None:
    """onnx refuses to read external data through a symbolic link: a data file written through
    one would make a model that does not load. Refused, before any work, the link kept."""
    import os

    from cli_helpers import one_line_error, run_cli

    from onnxprune.errors import UsageError

    (tmp_path / "real.data").write_bytes(b"old")
    os.symlink("real.data", tmp_path / "p.onnx.data")
    line = one_line_error(
        run_cli("prune", FIXTURES / "residual.onnx", "-o", tmp_path / "p.onnx", "--external-data", "--no-verify")
    )
    assert line == (
        f"onnxprune: error: {tmp_path / 'p.onnx.data'}: -o (its external data) would be written through a symbolic "
        "link (to real.data), and onnx refuses to read external data through a link; remove the link or give another "
        "file name"
    )
    with pytest.raises(
        UsageError, match=r"p.onnx.data: the model's external data would be written through a symbolic link"
    ):
        onnxprune.save(wide_model(), tmp_path / "p.onnx", external_data=True)
    assert (
        sorted(os.listdir(tmp_path)) == ["p.onnx.data", "real.data"] and (tmp_path / "real.data").read_bytes() == b"old"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-o", ""], "-o: an empty file name; give a file name"),
        (["-o", "newdir/"], "newdir/: output ends in '/', a folder; give a file name"),
        (["-o", "x.onnx/"], "x.onnx/: output ends in '/', a folder; give a file name"),
        (["-o", "p.onnx", "--report", ""], "--report: an empty file name; give a file name"),
        (["-o", "p.onnx", "--calibration", ""], "--calibration: an empty file name; give a file name"),
        (["-o", "x.onnx/p.onnx"], "x.onnx/p.onnx: output folder {tmp}/x.onnx is a file, not a folder"),
    ],
)
def test_an_output_that_is_no_file_name_is_refused_before_any_work(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    """-o "" (an unset shell variable) and -o newdir/ passed the checks, the whole run was done
    and then failed at the rename, saying ': Is a directory' (newdir does not even exist);
    --report "" and --calibration "" were taken for the option not given (no report, no data);
    -o x.onnx/p.onnx said x.onnx 'does not exist' (it is a file)."""
    import os

    from onnxprune.file_writes import check_output_folder

    src = tmp_path / "wide.onnx"
    onnx.save(wide_model(), str(src))
    (tmp_path / "x.onnx").write_bytes(b"a file")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["prune", str(src), *options, "--ratio", "0.5", "--no-verify", "-q"]) == 2
    assert capsys.readouterr().err == f"onnxprune: error: {message.format(tmp=tmp_path)}\n"
    assert sorted(os.listdir(tmp_path)) == ["wide.onnx", "x.onnx"]
    if options[1] != "p.onnx":  # the library's check of an output path refuses it too
        with pytest.raises(onnxprune.UsageError):
            check_output_folder(options[1])


def test_a_dangling_output_link_is_refused_before_any_work(tmp_path: Path) -> None:
    """A link to no file: refused with one line (as GNU cp refuses to write through a dangling
    link), the link left as it was; the companion files (.data, .bin) likewise."""
    import os

    from cli_helpers import one_line_error, run_cli

    from onnxprune.errors import UsageError
    from onnxprune.file_writes import check_writable

    os.symlink(tmp_path / "nowhere" / "real.onnx", tmp_path / "p.onnx")
    with pytest.raises(
        UsageError, match=r"p.onnx: output is a symbolic link to .*nowhere/real.onnx, which does not exist"
    ):
        check_writable(str(tmp_path / "p.onnx"))
    line = one_line_error(run_cli("prune", FIXTURES / "residual.onnx", "-o", tmp_path / "p.onnx", "--no-verify"))
    assert line == (
        f"onnxprune: error: {tmp_path / 'p.onnx'}: output is a symbolic link to {tmp_path / 'nowhere' / 'real.onnx'}, "
        "which does not exist (a write goes through a link to its file); create that file or give another file name"
    )
    os.symlink("gone.data", tmp_path / "q.onnx.data")
    args = ["prune", FIXTURES / "residual.onnx", "-o", tmp_path / "q.onnx", "--external-data", "--no-verify"]
    assert "-o (its external data) is a symbolic link to gone.data, which does not exist" in one_line_error(
        run_cli(*args)
    )
    assert sorted(os.listdir(tmp_path)) == ["p.onnx", "q.onnx.data"]
    assert os.readlink(tmp_path / "p.onnx") == str(tmp_path / "nowhere" / "real.onnx")


def test_a_link_to_another_file_system_is_written_through_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file staged on another file system than the link's target (the data file beside the
    link) cannot be renamed there (EXDEV): it is copied beside the target, then renamed."""
    import errno
    import os

    from onnxprune import file_writes

    real_replace = os.replace
    calls = []

    def cross_device(src, dst):
        calls.append(os.path.basename(src))
        if len(calls) == 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    (tmp_path / "staged").write_text("new")
    (tmp_path / "real").write_text("old")
    os.symlink("real", tmp_path / "link")
    monkeypatch.setattr(file_writes.os, "replace", cross_device)
    file_writes.replace_together([(str(tmp_path / "staged"), str(tmp_path / "link"))])
    assert calls == ["staged", f".onnxprune-{os.getpid()}-copy-real"]
    assert sorted(os.listdir(tmp_path)) == ["link", "real"] and (tmp_path / "real").read_text() == "new"


def test_two_outputs_leading_to_one_file_through_a_link_are_refused(tmp_path: Path) -> None:
    """Written through their links, --report r.json and --markdown m.md -> r.json would both
    replace r.json: refused like two outputs naming one file."""
    import argparse
    import os

    from onnxprune.cli_paths import check_outputs_distinct
    from onnxprune.errors import UsageError

    (tmp_path / "r.json").write_text("{}")
    os.symlink("r.json", tmp_path / "m.md")
    args = argparse.Namespace(report=str(tmp_path / "r.json"), markdown=str(tmp_path / "m.md"))
    with pytest.raises(UsageError, match=r"m.md: --report and --markdown name the same file; give another file name$"):
        check_outputs_distinct(args)


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


def test_copies_of_a_live_process_are_left_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    from onnxprune.file_writes import recover_leftovers

    (tmp_path / "m.onnx").write_bytes(b"new")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            (tmp_path / f".onnxprune-{live.pid}-kept0-m.onnx").write_bytes(b"old")
            assert recover_leftovers([str(tmp_path / "m.onnx")]) == []
            assert sorted(p.name for p in tmp_path.iterdir()) == [f".onnxprune-{live.pid}-kept0-m.onnx", "m.onnx"]
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


def test_the_ir_writer_stages_beside_the_links_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """openvino_ir's own writer (convert_to_ir without outputs=, and write_ir) staged
    m.tmpPID.xml beside a symbolic link (work/m.xml -> ../data/real.xml), not beside its target:
    with the target on another file system the final rename could not be atomic (a copy first).
    It now stages beside the target, under the hidden name a killed run's next run removes."""
    import os

    pytest.importorskip("openvino")
    from onnxprune import file_writes, openvino_ir

    work, data = tmp_path / "work", tmp_path / "data"
    work.mkdir()
    data.mkdir()
    real_replace = os.replace
    moves: list[tuple[str, str]] = []

    def spy(src, dst):
        moves.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(file_writes.os, "replace", spy)
    model = onnx.load(FIXTURES / "digits_cnn.onnx")
    for name, write in (
        ("m", lambda xml: openvino_ir.convert_to_ir(model, xml)),
        ("w", lambda xml: openvino_ir.write_ir(openvino_ir.convert_for_openvino(model, {}, "digits"), xml)),
    ):
        (data / f"{name}-real.xml").write_bytes(b"stale")
        os.symlink(f"../data/{name}-real.xml", work / f"{name}.xml")
        moves.clear()
        write(str(work / f"{name}.xml"))
        staged = {dst: src for src, dst in moves}
        assert os.path.dirname(staged[str(data / f"{name}-real.xml")]) == str(data)  # one rename on its file system
        assert os.path.islink(work / f"{name}.xml") and (data / f"{name}-real.xml").read_bytes() != b"stale"
    assert sorted(os.listdir(work)) == ["m.bin", "m.xml", "w.bin", "w.xml"]  # the .bin named after the given path
    assert sorted(os.listdir(data)) == ["m-real.xml", "w-real.xml"]  # nothing staged left
    import openvino as ov

    assert ov.Core().read_model(str(work / "w.xml")).inputs[0].get_any_name() == "input"


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
    args = ["prune", str(src), "-o", str(out), "--report", str(report), "--ratio", "0.5", "--no-verify", "-q"]
    assert cli.main(args) == 130
    assert capsys.readouterr().err == (
        "onnxprune: interrupted; the outputs were written (Ctrl-C came as they were moved into place)\n"
    )
    assert sorted(os.listdir(out_dir)) == ["p.onnx", "r.json"]  # no copy of the previous files left
    assert json.loads(report.read_text())["output"] == str(out)
    assert len(onnx.load(str(out)).graph.node) == len(wide_model().graph.node)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's handler is back


def test_long_file_names_are_written_or_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--report with a 250-byte name (valid: the file system takes 255) failed after all the work
    with 'File name too long': its staging name adds '.onnxprune-PID-N-'. A name over the file
    system's limit was refused only by the rename at the end, after the work."""
    import json
    import os

    pytest.importorskip("openvino")
    src = tmp_path / "wide.onnx"
    onnx.save(wide_model(), str(src))
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    report, ir = tmp_path / ("r" * (limit - 5) + ".json"), tmp_path / ("m" * (limit - 4) + ".xml")
    args = ["prune", str(src), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--no-verify", "-q"]
    assert cli.main([*args, "--report", str(report)]) == 0, capsys.readouterr().err
    assert json.loads(report.read_text())["output"] == str(tmp_path / "p.onnx")
    assert cli.main([*args, "--report", str(report)]) == 0, capsys.readouterr().err  # over it: its copy's name too
    assert json.loads(report.read_text())["output"] == str(tmp_path / "p.onnx")
    assert cli.main(["convert", str(tmp_path / "p.onnx"), "-o", str(ir), "-q"]) == 0, capsys.readouterr().err
    assert ir.is_file() and ir.with_suffix(".bin").is_file()
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == []  # nothing staged left
    too_long = tmp_path / ("x" * limit + ".onnx")
    assert cli.main(["prune", str(src), "-o", str(too_long), "--ratio", "0.5", "-q"]) == 2
    assert capsys.readouterr().err == (
        f"onnxprune: error: {too_long}: output file name is {limit + 5} bytes long; this file system takes {limit}\n"
    )
