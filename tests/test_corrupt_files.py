"""Corrupted and hostile files, one minimal file per class the mutation fuzzer found
(tools/fuzz_files.py): exit 2 and one line naming the file, the tensor or node, and what is
wrong; never an internal error, never an allocation the file does not back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _small(weight: TensorProto | None = None, opset: int = 17) -> onnx.ModelProto:
    """x -> Conv(W, B) -> Relu -> y: the smallest model each defect is planted in."""
    w = weight if weight is not None else numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "B")
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


def _replace(data: bytes, old: bytes, new: bytes) -> bytes:
    """Same-length replacement in the serialised file (protobuf will not build a bad string)."""
    assert len(old) == len(new) and data.count(old) == 1
    return data.replace(old, new)


def _node_name_not_utf8(folder: Path) -> bytes:
    return _replace(_bytes(_small()), b"relu", b"re\xffu")


def _tensor_name_not_utf8(folder: Path) -> bytes:
    m = _small()
    m.graph.initializer[1].name = "BIAS"
    m.graph.node[0].input[2] = "BIAS"
    data = _bytes(m)
    i = data.index(b"BIAS", data.index(b"BIAS") + 1)  # the initializer's name (after the node's input)
    return data[:i] + b"BI\xc3\x28" + data[i + 4 :]


def _raw_data_short(folder: Path) -> bytes:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    w.raw_data = w.raw_data[:-4]
    return _bytes(_small(w))


def _dims_contradict_data(folder: Path) -> bytes:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    w.dims[0] = 1000  # cannot reshape array of size 108 into shape (1000,3,3,3), once
    return _bytes(_small(w))


def _negative_dim(folder: Path) -> bytes:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    w.dims[1] = -3
    return _bytes(_small(w))


def _dims_overflow(folder: Path) -> bytes:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    del w.dims[:]
    w.dims.extend([2**40, 2**40, 3, 3])  # the product wraps to a small number in int64
    return _bytes(_small(w))


def _typed_data_short(folder: Path) -> bytes:
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 3, 3, 3], [1.0] * 108)
    del w.float_data[100:]  # 108 needed
    return _bytes(_small(w))


def _unknown_data_type(folder: Path) -> bytes:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    w.data_type = 99
    return _bytes(_small(w))


def _string_type_with_raw_data(folder: Path) -> bytes:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    w.data_type = TensorProto.STRING
    return _bytes(_small(w))


def _unknown_element_type(folder: Path) -> bytes:
    m = _small()
    m.graph.value_info.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 4, 8, 8]))
    m.graph.value_info[0].type.tensor_type.elem_type = 77  # graphsurgeon's KeyError, once
    return _bytes(m)


def _negative_shape_dim(folder: Path) -> bytes:
    m = _small()
    m.graph.value_info.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, -4, 8, 8]))
    return _bytes(m)


def _attribute_wrong_type(folder: Path) -> bytes:
    m = _small()
    conv = m.graph.node[0]
    del conv.attribute[:]
    conv.attribute.append(helper.make_attribute("pads", "one"))
    return _bytes(m)


def _self_reference(folder: Path) -> bytes:
    m = _small()
    m.graph.node[1].input[0] = "y"  # Relu reads its own output
    return _bytes(m)


def _conv_data_input_missing(folder: Path) -> bytes:
    m = _small()
    m.graph.node[0].attribute.append(helper.make_attribute("kernel_shape", [3, 3]))
    for i, d in enumerate(m.graph.output[0].type.tensor_type.shape.dim):
        d.dim_param = f"d{i}"
    del m.graph.node[0].input[0]  # Conv(W, B): with kernel_shape given, onnx's shape inference lets it through
    return _bytes(m)


def _fails_shape_inference(folder: Path) -> bytes:
    m = _small()
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5  # Conv makes 4 channels
    return _bytes(m)


def _external(folder: Path, **entries: str) -> bytes:
    """W in weights.bin (432 bytes) with the given external-data entries."""
    (folder / "weights.bin").write_bytes(np.ones((4, 3, 3, 3), np.float32).tobytes())
    w = helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3, 3, 3])  # for the name only
    t = TensorProto()
    t.name, t.data_type = w.name, TensorProto.FLOAT
    t.dims.extend([4, 3, 3, 3])
    t.data_location = TensorProto.EXTERNAL
    for key, value in {"location": "weights.bin", **entries}.items():
        e = t.external_data.add()
        e.key, e.value = key, value
    return _bytes(_small(t))


def _external_offset_past_end(folder: Path) -> bytes:
    return _external(folder, offset="4096", length="432")


def _external_length_huge(folder: Path) -> bytes:
    return _external(folder, length=str(2**62))  # was read (allocated) before the size was checked


def _external_length_contradicts_dims(folder: Path) -> bytes:
    return _external(folder, length="400")


def _external_offset_not_a_number(folder: Path) -> bytes:
    return _external(folder, offset="-8")


def _external_unknown_key(folder: Path) -> bytes:
    return _external(folder, lenght="432")  # onnx warns and ignores it, onnxruntime refuses the model


def _attribute_string_not_utf8(folder: Path) -> bytes:
    m = _small()
    m.graph.node[0].attribute.append(helper.make_attribute("auto_pad", "NOTSET"))
    return _replace(_bytes(m), b"NOTSET", b"NOT\xffET")


def _no_outputs(folder: Path) -> bytes:
    m = _small()
    del m.graph.output[:]  # nothing is used: everything would be pruned away
    return _bytes(m)


def _empty_value_type(folder: Path) -> bytes:
    m = _small()
    vi = m.graph.value_info.add()
    vi.name = "c"
    vi.type.SetInParent()  # what a tensor_type of the wrong wire type parses to
    return _bytes(m)


def _convtranspose_bias_contradicts_weight(folder: Path) -> bytes:
    m = _small()
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((3, 4, 3, 3), np.float32), "W"))
    m.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros(7, np.float32), "B"))
    m.graph.node[0].CopyFrom(
        helper.make_node("ConvTranspose", ["x", "W", "B"], ["c"], name="deconv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    )
    for i, d in enumerate(m.graph.output[0].type.tensor_type.shape.dim):
        d.dim_param = f"d{i}"
    return _bytes(m)


def _huge_input(folder: Path) -> bytes:
    m = _small()
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = 2**20  # 24 TiB of random verification input
    m.graph.output[0].type.tensor_type.shape.dim[2].dim_value = m.graph.output[0].type.tensor_type.shape.dim[
        3
    ].dim_value = 2**20
    return _bytes(m)


def _huge_intermediate(folder: Path) -> bytes:
    """A still-valid model whose verification would compute a 4 GiB tensor (a Tile that
    repeats 2048 x 2048 times), from an 8x8 input."""
    w = np.ones((4, 3, 3, 3), np.float32)
    w[1] = 0  # a zero filter: something to remove, so verification runs
    m = _small(numpy_helper.from_array(w, "W"))
    m.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 2048, 2048], np.int64), "reps"))
    m.graph.node.append(helper.make_node("Tile", ["y", "reps"], ["t"], name="tile"))
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4, 16384, 16384]))
    return _bytes(m)


CASES: list[tuple[Callable[[Path], bytes], str]] = [
    (_node_name_not_utf8, "node #1 (Relu): name is not valid UTF-8 (b're\\xffu')"),
    (_tensor_name_not_utf8, "initializer[1]: tensor name is not valid UTF-8"),
    (_raw_data_short, "tensor 'W': raw data holds 428 bytes, its dims (4, 3, 3, 3) and type FLOAT need 432"),
    (
        _dims_contradict_data,
        "tensor 'W': raw data holds 432 bytes, its dims (1000, 3, 3, 3) and type FLOAT need 108000",
    ),
    (_negative_dim, "tensor 'W': negative dim in (4, -3, 3, 3)"),
    (_dims_overflow, "tensor 'W': its dims (1099511627776, 1099511627776, 3, 3) multiply to more than int64 can count"),
    (_typed_data_short, "tensor 'W': float_data holds 100 values, its dims (4, 3, 3, 3) and type FLOAT need 108"),
    (_unknown_data_type, "tensor 'W': unknown data type 99"),
    (_string_type_with_raw_data, "tensor 'W': a STRING tensor cannot hold raw data"),
    (_unknown_element_type, "value info 'c': unknown element type 77"),
    (_negative_shape_dim, "value info 'c': dimension 1 is negative (-4)"),
    (_attribute_wrong_type, "invalid model: "),
    (_self_reference, "node 'relu' (Relu) reads 'y' before 'relu' produces it"),
    (_fails_shape_inference, "invalid model: [ShapeInferenceError]"),
    (
        _conv_data_input_missing,
        "node 'conv' (Conv): weight 'B' has rank 1 and the input rank 4: both must be equal and at least 3",
    ),
    (
        _external_offset_past_end,
        "tensor 'W': external data 4096+432 bytes runs past the end of 'weights.bin' (432 bytes)",
    ),
    (
        _external_length_huge,
        f"tensor 'W': external data 0+{2**62} bytes runs past the end of 'weights.bin' (432 bytes)",
    ),
    (
        _external_length_contradicts_dims,
        "tensor 'W': external data holds 400 bytes, its dims (4, 3, 3, 3) and type FLOAT need 432",
    ),
    (_external_offset_not_a_number, "tensor 'W': external data offset '-8' is not a non-negative integer"),
    (
        _external_unknown_key,
        "tensor 'W': external data key 'lenght' is not one of basepath, checksum, length, location, offset",
    ),
    (_attribute_string_not_utf8, "node 'conv' (Conv), attribute 'auto_pad': s is not valid UTF-8 (b'NOT\\xffET')"),
    (_no_outputs, "the graph has no outputs"),
    (_empty_value_type, "value info 'c': its type holds no tensor, sequence, map, optional or sparse type"),
    (
        _convtranspose_bias_contradicts_weight,
        "node 'deconv' (ConvTranspose): bias 'B' has 7 values for 4 output channels",
    ),
    (
        _huge_intermediate,
        "verification would compute 4 GiB of tensors (the largest 't' of shape (1, 4, 16384, 16384); the limit is 4 GiB)",
    ),
    (_huge_input, "input 'x' of shape (1, 3, 1048576, 1048576) would take 2.46e+04 GiB of random data to verify"),
]


@pytest.mark.parametrize("make, message", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_corrupt_file_refused(make, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    bad = folder / "bad.onnx"
    bad.write_bytes(make(folder))
    before = bad.read_bytes()
    out = tmp_path / "out.onnx"
    for argv in (["prune", str(bad), "-o", str(out)], ["analyze", str(bad)]):
        if make in (_huge_input, _huge_intermediate) and argv[0] == "analyze":
            continue  # a valid model: only verification would allocate
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"onnxprune: error: {bad}: ") and message in err, err
        assert "Traceback" not in err
    assert not out.exists() and bad.read_bytes() == before
    assert not list(tmp_path.glob("out.onnx*"))


def test_corrupt_model_proto_refused_by_the_library() -> None:
    """The same checks for a ModelProto handed to the API (no file: lengths from protobuf)."""
    import onnxprune

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    w.raw_data = w.raw_data[:-4]
    with pytest.raises(onnxprune.LoadError, match=r"<ModelProto>: tensor 'W': raw data holds 428 bytes"):
        onnxprune.prune(_small(w))


def test_changed_weight_value_prunes_normally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mutation that leaves a valid model (a weight's value changed in the file's bytes)
    prunes like any model: exit 0, verified, and the result computes what the mutated file does."""
    from conftest import assert_same_outputs

    data = (FIXTURES / "residual.onnx").read_bytes()
    model = onnx.load_model_from_string(data)
    w = next(t for t in model.graph.initializer if len(t.dims) == 4 and np.abs(numpy_helper.to_array(t)).sum() > 0)
    old = w.raw_data[40:44]
    assert data.count(w.raw_data) == 1 and old != np.float32(0.75).tobytes()
    at = data.index(w.raw_data) + 40
    mutated = data[:at] + np.float32(0.75).tobytes() + data[at + 4 :]
    path, out = tmp_path / "mutated.onnx", tmp_path / "out.onnx"
    path.write_bytes(mutated)
    assert cli.main(["prune", str(path), "-o", str(out), "-q"]) == 0, capsys.readouterr().err
    changed = onnx.load(path)
    assert numpy_helper.to_array(next(t for t in changed.graph.initializer if t.name == w.name)).reshape(-1)[
        10
    ] == np.float32(0.75)
    pruned = onnx.load(out)
    assert sum(len(t.raw_data) for t in pruned.graph.initializer) < sum(
        len(t.raw_data) for t in changed.graph.initializer
    )
    assert_same_outputs(changed, pruned)


def _chain_model(n: int, through_weight: bool) -> onnx.ModelProto:
    """n Identity nodes in a row: between the weight and its Conv, or between a Shape and the
    Reshape that reads it (a hostile file; exporters put one to three)."""
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    if through_weight:
        nodes = [helper.make_node("Identity", ["W" if i == 0 else f"w{i - 1}"], [f"w{i}"]) for i in range(n)]
        nodes.append(helper.make_node("Conv", ["x", f"w{n - 1}"], ["y"], name="conv", pads=[1, 1, 1, 1]))
    else:
        nodes = [
            helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Shape", ["c"], ["s0"]),
        ]
        nodes += [helper.make_node("Identity", [f"s{i}"], [f"s{i + 1}"]) for i in range(n)]
        nodes.append(helper.make_node("Reshape", ["c", f"s{n}"], ["y"], name="reshape"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_long_identity_chain_to_a_weight_is_bounded() -> None:
    """A constant is followed through at most MAX_CHAIN nodes: each step kept its own chain,
    so 30,000 Identity nodes took 4.5 GB and 90 s. Beyond it the Conv is left alone."""
    import onnxprune
    from onnxprune.analysis import import_graph
    from onnxprune.params import MAX_CHAIN, ParamResolver

    for n, constant in ((MAX_CHAIN, True), (MAX_CHAIN + 1, False)):
        graph = import_graph(_chain_model(n, through_weight=True))
        resolve = ParamResolver()
        for node in graph.nodes:  # the analysis's order: each step's input is resolved already
            resolve(node.outputs[0]) if node.op == "Identity" else None
        conv = next(node for node in graph.nodes if node.op == "Conv")
        p = resolve(conv.inputs[1])
        assert (p is not None) == constant
        if constant:
            assert len(p.chain) == MAX_CHAIN and p.values.shape == (4, 3, 3, 3)
    analysis = onnxprune.analyze(_chain_model(3000, through_weight=True))
    assert analysis.sources == () or all(s.node != "conv" for s in analysis.sources)


def test_long_shape_expression_is_bounded(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """3,000 Identity nodes between a Shape and a Reshape: Python's recursion limit once (an
    internal error); now followed to MAX_DEPTH only, and the Reshape is left alone."""
    path = tmp_path / "chain.onnx"
    onnx.save(_chain_model(3000, through_weight=False), path)
    assert cli.main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "target shape is neither constant nor computed from shapes" in out


def test_transpose_perm_not_a_permutation() -> None:
    """A Transpose whose perm lost an entry, where onnx's checks do not see it (the input's
    rank unknown to shape inference): the rule names the node (a KeyError once)."""
    import onnxprune
    from onnxprune.analysis import analyze

    m = _small()
    m.graph.node[1].CopyFrom(helper.make_node("Transpose", ["c"], ["y"], name="transpose", perm=[0, 2, 3]))
    with pytest.raises(
        onnxprune.LoadError,
        match=r"node 'transpose' \(Transpose\): perm \[0, 2, 3\] is not a permutation of the input's 4 axes",
    ):
        analyze(m, source="m.onnx")


def _relu_chain(length: int, outputs_all: bool) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"relu{i}") for i in range(length)]
    names = [f"t{i}" for i in range(length + 1)]
    outs = names[1:] if outputs_all else names[-1:]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs],
    )
    return helper.make_model(graph), {n: (1, 32, 1024, 1024) for n in names}  # 128 MiB each


def test_run_size_counts_tensors_alive_at_once() -> None:
    """40 tensors of 128 MiB (5 GiB summed) in a chain are never alive together: verified. The same
    tensors all kept as graph outputs are: refused before onnxruntime runs."""
    from onnxprune.errors import UnsupportedModel
    from onnxprune.verification import check_run_size

    chain, shapes = _relu_chain(40, outputs_all=False)
    check_run_size(chain, shapes, set(), "chain.onnx")
    kept, shapes = _relu_chain(40, outputs_all=True)
    with pytest.raises(UnsupportedModel, match=r"chain\.onnx: verification would compute 5 GiB of tensors"):
        check_run_size(kept, shapes, set(), "chain.onnx")
