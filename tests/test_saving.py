"""Writing models: the big new weights of an unverified removal go from their arrays to the
file (saving.DeferredModel); the file must read back as exactly the completed model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune import cli
from onnxprune.saving import DeferredModel
from onnxprune.testing import GraphBuilder
from onnxprune.verification import run_model

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _wide_model() -> onnx.ModelProto:
    """Convs and a Gemm whose weights are far above the size from which they are deferred."""
    b = GraphBuilder(opset=17, seed=3)
    x = b.input("x", [1, 8, 6, 6])
    y = b.op("Relu", b.conv(x, 96, zero=(1, 5, 40)))
    y = b.op("Relu", b.conv(y, 96, zero=(0, 7)))
    y = b.op("Flatten", b.op("GlobalAveragePool", y), axis=1)
    b.output(b.gemm(y, 96, 300), shape=[1, 300])
    return b.build()


def _hollow_count(result: onnxprune.PruneResult) -> int:
    return len(result.pruned.arrays)


def test_deferred_weights_write_the_completed_model(tmp_path: Path) -> None:
    model = _wide_model()
    fast = onnxprune.prune(model, "zero", verify=False)
    assert _hollow_count(fast) >= 2  # the case under test: weights still held as arrays
    written = tmp_path / "fast.onnx"
    size = fast.save(written)
    assert size == written.stat().st_size == fast.report.size_after
    assert _hollow_count(fast) >= 2  # saving did not fill them

    completed = onnxprune.prune(model, "zero", verify=False).model  # filled in memory
    loaded = onnx.load(str(written))
    assert loaded == completed
    onnx.checker.check_model(str(written), full_check=True)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 8, 6, 6)).astype(np.float32)}
    want, got = run_model(model, feeds)[0], run_model(loaded, feeds)[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_report_size_is_the_bytes_written(tmp_path: Path) -> None:
    out = tmp_path / "o.onnx"
    result = onnxprune.prune(_wide_model(), "zero", verify=False, output=out)
    assert result.report.size_after == out.stat().st_size
    assert result.report.channels_removed == 5


def test_complete_fills_every_hollow_tensor_once() -> None:
    fast = onnxprune.prune(_wide_model(), "zero", verify=False)
    names = list(fast.pruned.arrays)
    model = fast.model
    assert not fast.pruned.arrays and fast.model is model
    inits = {t.name: t for t in model.graph.initializer}
    for name in names:
        t = inits[name]
        assert len(t.raw_data) == int(np.prod(t.dims)) * 4


def test_cli_no_verify_equals_verified_output(tmp_path: Path) -> None:
    src = tmp_path / "wide.onnx"
    onnx.save(_wide_model(), str(src))
    before = src.read_bytes()
    fast, checked = tmp_path / "fast.onnx", tmp_path / "checked.onnx"
    assert cli.main(["prune", str(src), "-o", str(fast), "--no-verify", "-q"]) == 0
    assert cli.main(["prune", str(src), "-o", str(checked), "-q"]) == 0
    assert onnx.load(str(fast)) == onnx.load(str(checked))
    assert src.read_bytes() == before


def test_external_data_from_deferred_weights(tmp_path: Path) -> None:
    fast = onnxprune.prune(_wide_model(), "zero", verify=False)
    out = tmp_path / "ext.onnx"
    size = fast.save(out, external_data=True)
    data = tmp_path / "ext.onnx.data"
    assert data.exists() and size == out.stat().st_size + data.stat().st_size
    loaded, want = onnx.load(str(out)), fast.model
    assert list(loaded.graph.node) == list(want.graph.node)
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in loaded.graph.initializer}
    assert arrays.keys() == {t.name for t in want.graph.initializer}
    for t in want.graph.initializer:
        np.testing.assert_array_equal(arrays[t.name], onnx.numpy_helper.to_array(t))


def test_hollow_tensors_must_come_last() -> None:
    model = _wide_model()
    deferred = DeferredModel(model, {model.graph.initializer[0].name: np.zeros(3, np.float32)})
    with pytest.raises(AssertionError, match="last ones"):
        deferred.encode()


def test_each_weight_is_read_out_of_protobuf_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The analysis and the surgery share the arrays (params.InitializerCache): reading a
    weight copies it, which on a big model costs as much as loading it. From a file, the
    weights are views of the file's bytes and are not read out of protobuf at all."""
    model = _wide_model()
    src = tmp_path / "wide.onnx"
    onnx.save(model, str(src))
    reads: dict[str, int] = {}
    real = onnx.numpy_helper.to_array

    def counting(tensor, *args, **kwargs):
        reads[tensor.name] = reads.get(tensor.name, 0) + 1
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(onnx.numpy_helper, "to_array", counting)
    big = {t.name for t in model.graph.initializer if np.prod(t.dims) > 1000}
    onnxprune.prune(model, "zero", verify=False, output=tmp_path / "a.onnx")  # a ModelProto
    assert big and all(reads.get(name, 0) == 1 for name in big), reads
    reads.clear()
    onnxprune.prune(src, "zero", verify=False, output=tmp_path / "b.onnx")  # a file
    assert not any(reads.get(name, 0) for name in big), reads
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_raw_data_offsets_find_every_weight() -> None:
    from onnxprune.wire import raw_data_offsets

    model = _wide_model()
    data = model.SerializeToString()
    offsets = raw_data_offsets(data)
    assert set(offsets) == {t.name for t in model.graph.initializer}
    for t in model.graph.initializer:
        start, length = offsets[t.name]
        assert data[start : start + length] == t.raw_data
    with pytest.raises(ValueError):
        raw_data_offsets(data[: len(data) // 2])  # a message cut short


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parent.parent / "fixtures").glob("*.onnx")))
def test_pruned_cost_without_shape_inference(name: str) -> None:
    """The report's after-cost comes from the analysis' shapes shrunk by the removed channels;
    it must equal what shape inference on the pruned model gives."""
    from onnxprune.analysis import static_shapes
    from onnxprune.compensation import removed_id_mask
    from onnxprune.metrics import model_cost, pruned_shapes
    from onnxprune.shapes import concrete_input_shapes

    path = Path(__file__).parent.parent / "fixtures" / name
    criterion = "zero" if name != "digits_cnn.onnx" else "l2"
    result = onnxprune.prune(path, criterion, verify=False, ratio=0.3 if criterion == "l2" else None)
    pruned = result.model
    derived = pruned_shapes(result.analysis, removed_id_mask(result.analysis, result.plan), pruned)
    inferred = static_shapes(pruned, concrete_input_shapes(pruned, {}, name))
    if derived is not None:
        assert model_cost(pruned, derived) == model_cost(pruned, inferred)
    assert result.report.macs_after == model_cost(pruned, inferred).macs


def test_deferred_write_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "wide.onnx"
    onnx.save(_wide_model(), str(src))
    written = []
    for i in range(2):
        out = tmp_path / f"o{i}.onnx"
        assert cli.main(["prune", str(src), "-o", str(out), "--no-verify", "-q"]) == 0
        written.append(out.read_bytes())
    assert written[0] == written[1]


def test_wire_reader_finds_what_the_deferred_writer_wrote(tmp_path: Path) -> None:
    """The writer puts hollow tensors after the rest of the graph; the wire reader must find
    their raw data there, byte for byte."""
    from onnxprune.wire import raw_data_offsets

    fast = onnxprune.prune(_wide_model(), "zero", verify=False)
    arrays = {name: values.copy() for name, values in fast.pruned.arrays.items()}
    out = tmp_path / "o.onnx"
    fast.save(out)
    data = out.read_bytes()
    offsets = raw_data_offsets(data)
    assert arrays and set(arrays) <= set(offsets)
    for name, values in arrays.items():
        start, length = offsets[name]
        assert data[start : start + length] == values.tobytes()


def test_full_disk_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A write that fails half way (here: no space left) is one line, exit 2, and neither the
    output nor the staging folder is left behind; the input is untouched."""
    import errno

    from onnxprune.saving import DeferredModel

    src = tmp_path / "wide.onnx"
    onnx.save(_wide_model(), str(src))
    before = src.read_bytes()
    real = DeferredModel.write_files

    def full(self, path, external_data):
        real(self, path, external_data)  # the bytes are on disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(DeferredModel, "write_files", full)
    out = tmp_path / "o.onnx"
    assert cli.main(["prune", str(src), "-o", str(out), "--no-verify", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".onnxprune-*"))
    assert src.read_bytes() == before


# -- an OSError while saving stayed a raw OSError in the API; a failed move left the data file --


def test_api_save_failures_are_typed_errors_naming_the_destination(tmp_path, monkeypatch) -> None:
    import errno
    import os

    import onnx

    from onnxprune import saving
    from onnxprune.errors import OnnxPruneError, WriteError

    model = onnx.load(FIXTURES / "digits_cnn.onnx")
    before = model.SerializeToString()
    destination = tmp_path / "m.onnx"

    def full_disk(self, path, external_data):
        with open(path, "wb") as f:
            f.write(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    with monkeypatch.context() as m:
        m.setattr(saving.DeferredModel, "write_files", full_disk)
        with pytest.raises(WriteError) as caught:
            onnxprune.save(model, destination)
    assert isinstance(caught.value, OnnxPruneError) and isinstance(caught.value, OSError)
    assert str(caught.value) == f"{destination}: No space left on device; nothing written"
    assert (caught.value.filename, caught.value.errno) == (str(destination), errno.ENOSPC)
    assert list(tmp_path.iterdir()) == []

    # the data file is moved into place first: the model's move failing must not leave it there
    real_replace = os.replace

    def refuse_model(src, dst):
        if str(dst).endswith("m.onnx"):
            raise PermissionError(errno.EACCES, "Permission denied", src)
        real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(saving.os, "replace", refuse_model)
        with pytest.raises(WriteError, match=rf"^{destination}: Permission denied; nothing written$"):
            onnxprune.save(model, destination, external_data=True)
    assert list(tmp_path.iterdir()) == []

    # a folder it may not create its staging folder in
    def no_folder(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    import tempfile

    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkdtemp", no_folder)
        with pytest.raises(WriteError, match=rf"^{destination}: Permission denied; nothing written$"):
            onnxprune.save(model, destination)
    assert list(tmp_path.iterdir()) == [] and model.SerializeToString() == before
    onnxprune.save(model, destination)  # and a write that works still works
    assert onnx.load(str(destination)).SerializeToString() == before


def test_a_write_error_survives_copy_and_pickle() -> None:
    import copy
    import errno
    import pickle

    from onnxprune.errors import WriteError

    error = WriteError("m.onnx", OSError(errno.ENOSPC, "No space left on device", "/tmp/.onnxprune-1/m.onnx"))
    # before: TypeError: WriteError.__init__() takes 3 positional arguments but 4 were given
    for again in (copy.copy(error), pickle.loads(pickle.dumps(error))):
        assert type(again) is WriteError
        assert str(again) == "m.onnx: No space left on device; nothing written"
        assert (again.errno, again.strerror, again.filename) == (errno.ENOSPC, "No space left on device", "m.onnx")


# -- overwriting m.onnx + m.onnx.data: a failed model move removed the new data file after it had
#    replaced the old one, leaving the old model without its data --


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

    old, new = _wide_model(), onnx.load(FIXTURES / "digits_cnn.onnx")
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
    onnx.save(_wide_model(), str(src))
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
        _refuse_move_of(m, saving, f"m.tmp{__import__('os').getpid()}.xml")
        with pytest.raises(WriteError, match=rf"^{xml}: Permission denied; nothing written$"):
            openvino_ir.convert_to_ir(_wide_model(), xml)
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
    onnx.save(_wide_model(), str(src))
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
    onnxprune.save(_wide_model(), work / "q.onnx", external_data=True)
    assert os.path.islink(work / "q.onnx") and (work / "q.onnx.data").is_file()
    loaded = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(work / "q.onnx")).graph.initializer}
    assert all(np.array_equal(loaded[t.name], onnx.numpy_helper.to_array(t)) for t in _wide_model().graph.initializer)
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
        onnxprune.save(_wide_model(), tmp_path / "p.onnx", external_data=True)
    assert (
        sorted(os.listdir(tmp_path)) == ["p.onnx.data", "real.data"] and (tmp_path / "real.data").read_bytes() == b"old"
    )


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
    onnxprune.save(_wide_model(), destination, external_data=True)
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
