"""Output paths (onnxprune/file_writes.py): outputs that are symbolic links are written through
(beside the link's target, by a copy across file systems) or refused (dangling, external data
behind a link, a link to a process's file, two outputs reaching one file); a name that is no file
name, or too long for the file system, is refused before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from saving_helpers import wide_model

import onnxprune
from onnxprune import cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


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
    assert calls == ["staged", f"{file_writes.own_prefix(str(tmp_path))}copy-real"]
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
