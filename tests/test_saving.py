"""Writing models: the big new weights of an unverified removal go from their arrays to the
file (saving.DeferredModel); the file must read back as exactly the completed model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from saving_helpers import wide_model

import onnxprune
from onnxprune import cli
from onnxprune.saving import DeferredModel
from onnxprune.verification import run_model

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _hollow_count(result: onnxprune.PruneResult) -> int:
    return len(result.pruned.arrays)


def test_deferred_weights_write_the_completed_model(tmp_path: Path) -> None:
    model = wide_model()
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
    result = onnxprune.prune(wide_model(), "zero", verify=False, output=out)
    assert result.report.size_after == out.stat().st_size
    assert result.report.channels_removed == 5


def test_complete_fills_every_hollow_tensor_once() -> None:
    fast = onnxprune.prune(wide_model(), "zero", verify=False)
    names = list(fast.pruned.arrays)
    model = fast.model
    assert not fast.pruned.arrays and fast.model is model
    inits = {t.name: t for t in model.graph.initializer}
    for name in names:
        t = inits[name]
        assert len(t.raw_data) == int(np.prod(t.dims)) * 4


def test_cli_no_verify_equals_verified_output(tmp_path: Path) -> None:
    src = tmp_path / "wide.onnx"
    onnx.save(wide_model(), str(src))
    before = src.read_bytes()
    fast, checked = tmp_path / "fast.onnx", tmp_path / "checked.onnx"
    assert cli.main(["prune", str(src), "-o", str(fast), "--no-verify", "-q"]) == 0
    assert cli.main(["prune", str(src), "-o", str(checked), "-q"]) == 0
    assert onnx.load(str(fast)) == onnx.load(str(checked))
    assert src.read_bytes() == before


def test_external_data_from_deferred_weights(tmp_path: Path) -> None:
    fast = onnxprune.prune(wide_model(), "zero", verify=False)
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
    model = wide_model()
    deferred = DeferredModel(model, {model.graph.initializer[0].name: np.zeros(3, np.float32)})
    with pytest.raises(AssertionError, match="last ones"):
        deferred.encode()


def test_each_weight_is_read_out_of_protobuf_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The analysis and the surgery share the arrays (params.InitializerCache): reading a
    weight copies it, which on a big model costs as much as loading it. From a file, the
    weights are views of the file's bytes and are not read out of protobuf at all."""
    model = wide_model()
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

    model = wide_model()
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
    onnx.save(wide_model(), str(src))
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

    fast = onnxprune.prune(wide_model(), "zero", verify=False)
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
    onnx.save(wide_model(), str(src))
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


def test_the_replaced_models_data_file_goes_with_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """prune -o p.onnx --external-data, then prune -o p.onnx as one file: the first run's
    p.onnx.data (the weights, as big as the model) stayed beside the new p.onnx, first without
    a word, then with a warning. It was the replaced model's: it is removed with it now (CLI and
    library). A p.onnx.data the replaced model did not read, or one another model in the folder
    reads (a copy of the model), is left, and said."""
    import shutil

    src = tmp_path / "wide.onnx"
    onnx.save(wide_model(), str(src))
    out = tmp_path / "p.onnx"
    args = ["prune", str(src), "-o", str(out), "--ratio", "0.5", "--no-verify", "-q"]
    assert cli.main([*args, "--external-data"]) == 0
    assert capsys.readouterr().err == ""  # the model uses it
    assert cli.main(args) == 0 and capsys.readouterr().err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.onnx", "wide.onnx"]
    assert not any(t.external_data for t in onnx.load(str(out), load_external_data=False).graph.initializer)
    onnxprune.save(onnx.load(str(src)), out, external_data=True)  # the library alike
    onnxprune.save(onnx.load(str(src)), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.onnx", "wide.onnx"]

    warning = (
        f"onnxprune: warning: {out}.data: not used by {out} (written as one file): left from an earlier "
        "model; remove it unless another model uses it\n"
    )
    assert cli.main([*args, "--external-data"]) == 0
    shutil.copy(out, tmp_path / "copy.onnx")  # reads p.onnx.data too
    data = (tmp_path / "p.onnx.data").read_bytes()
    assert cli.main(args) == 0 and capsys.readouterr().err == warning
    assert (tmp_path / "p.onnx.data").read_bytes() == data
    onnx.load(str(tmp_path / "copy.onnx"))  # the copy still loads
    (tmp_path / "copy.onnx").unlink()
    assert cli.main(args) == 0 and capsys.readouterr().err == warning  # the model replaced did not read it
    assert (tmp_path / "p.onnx.data").read_bytes() == data
