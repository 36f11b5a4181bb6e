"""Every onnxruntime failure is a typed error naming the model file and what failed, through
every public entry point that runs models, and exit 2 (one line, no onnxruntime log) from the
command line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from dynamic_models import dynamic_hw_model
from onnx import TensorProto, helper

import onnxprune
from onnxprune import cli
from onnxprune.errors import LoadError, UsageError, VerificationFailed
from onnxprune.runtime import onnxruntime_message, session
from onnxprune.testing import GraphBuilder


def _model(tmp_path: Path, tail: str) -> Path:
    """Conv -> Relu -> Conv -> a last node onnxruntime cannot load ("load": a custom op with no
    kernel) or cannot run ("run": a Reshape to a size that does not match); the first Conv's
    channels are prunable (read by the second), so every analysis has something to do."""
    b = GraphBuilder(opset=17, seed=3)
    x = b.input("x", [1, 3, 6, 6])
    y = b.conv(b.op("Relu", b.conv(x, 6)), 4)
    if tail == "load":
        b.nodes.append(helper.make_node("MyOp", [y], ["out"], domain="com.example", name="custom_node"))
        b.outputs.append(helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 6, 6]))
        model = b.build(domains={"com.example": 1})
    else:
        shape = b.const(np.array([1, 100], dtype=np.int64))
        b.nodes.append(helper.make_node("Reshape", [y, shape], ["out"], name="bad_reshape"))
        b.outputs.append(helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 100]))
        model = b.build()
    path = tmp_path / f"{tail}.onnx"
    onnx.save(model, path)
    return path


def _calib(tmp_path: Path, shape: tuple[int, ...] = (1, 3, 6, 6), n: int = 8) -> str:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((n, *shape[1:])).astype(np.float32))
    return str(path)


# What each kind of failure says, and the entry points that run the model.
_SAYS = {"load": "onnxruntime cannot load", "run": "onnxruntime cannot run"}
_ENTRY_POINTS: dict[str, Callable[[Path, str], object]] = {
    "prune (verification)": lambda p, c: onnxprune.prune(p),
    "prune (calibration statistics)": lambda p, c: onnxprune.prune(p, "l2", ratio=0.5, calibration=c, verify=False),
    "sensitivity (calibration statistics)": lambda p, c: onnxprune.sensitivity(p, c),
    "sensitivity (trials)": lambda p, c: onnxprune.sensitivity(p, c, compensation="none"),
}


@pytest.mark.parametrize("tail", ["load", "run"])
@pytest.mark.parametrize("entry", list(_ENTRY_POINTS))
def test_onnxruntime_failure_is_a_typed_error(tmp_path: Path, tail: str, entry: str) -> None:
    path = _model(tmp_path, tail)
    before = path.read_bytes()
    with pytest.raises(LoadError) as info:
        _ENTRY_POINTS[entry](path, _calib(tmp_path))
    text = str(info.value)
    assert text.startswith(f"{path}: {_SAYS[tail]}") and "\n" not in text, text
    if tail == "run":  # the failing node and the reason, without onnxruntime's source location
        assert "Reshape node 'bad_reshape': The input tensor cannot be reshaped" in text, text
        assert ".h:" not in text and "was false" not in text, text
    else:
        assert "MyOp" in text, text
    assert path.read_bytes() == before


@pytest.mark.parametrize("tail", ["load", "run"])
@pytest.mark.parametrize(
    "args",
    [
        ["prune", "{model}", "-o", "{out}"],
        ["prune", "{model}", "-o", "{out}", "--criterion", "l2", "--ratio", "0.5", "--calibration", "{calib}"],
        ["sensitivity", "{model}", "--calibration", "{calib}"],
        ["sensitivity", "{model}", "--calibration", "{calib}", "--compensation", "none"],
        ["bench", "{model}", "--backend", "onnxruntime"],
    ],
    ids=["prune", "prune-calibration", "sensitivity", "sensitivity-trials", "bench"],
)
def test_cli_exit_2_on_onnxruntime_failure(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], tail: str, args: list[str]
) -> None:
    path, out, calib = _model(tmp_path, tail), tmp_path / "o.onnx", _calib(tmp_path)
    argv = [a.format(model=path, out=out, calib=calib) for a in args]
    assert cli.main(argv) == 2
    err = capfd.readouterr().err  # file-descriptor level: onnxruntime's own log would show here
    assert err.startswith(f"onnxprune: error: {path}: {_SAYS[tail]}"), err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob("o.onnx*"))


def test_inputs_that_do_not_fit_are_a_usage_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Calibration samples of the wrong size: the input, its shape and the model's."""
    b = GraphBuilder(opset=17, seed=3)
    b.output(b.conv(b.op("Relu", b.conv(b.input("x", [1, 3, 6, 6]), 6)), 4))
    path = tmp_path / "m.onnx"
    onnx.save(b.build(), path)
    calib = _calib(tmp_path, (1, 3, 5, 5))
    with pytest.raises(
        UsageError, match=r"the inputs do not fit .*input 'x' has shape \[1, 3, 5, 5\], the model takes \[1, 3, 6, 6\]"
    ):
        onnxprune.sensitivity(path, calib)
    assert (
        cli.main(
            [
                "prune",
                str(path),
                "-o",
                str(tmp_path / "o.onnx"),
                "--criterion",
                "l2",
                "--ratio",
                "0.5",
                "--calibration",
                calib,
            ]
        )
        == 2
    )
    err = capfd.readouterr().err
    assert err.startswith(f"onnxprune: error: {path}: the inputs do not fit") and len(err.strip().splitlines()) == 1, (
        err
    )


def test_session_roles(tmp_path: Path) -> None:
    """The pruned model's failures fail verification (nothing written); feeds are checked by
    name, type and static shape."""
    path = _model(tmp_path, "run")
    feeds = {"x": np.zeros((1, 3, 6, 6), np.float32)}
    with pytest.raises(
        VerificationFailed,
        match=r"^<model>: onnxruntime cannot run the pruned model: Reshape node 'bad_reshape'.*; nothing written$",
    ):
        session(str(path), pruned=True)(feeds)
    with pytest.raises(VerificationFailed, match=r"cannot load the pruned model: .*MyOp.*; nothing written$"):
        session(str(_model(tmp_path, "load")), pruned=True)
    run = session(str(path), source="m.onnx", what="the probe")
    assert run.input_shapes == {"x": [1, 3, 6, 6]} and run.output_names == ["out"]
    for bad, says in [
        ({}, r"no value for input\(s\) \['x'\]"),
        ({**feeds, "y": feeds["x"]}, r"\['y'\] are not inputs of the model"),
        ({"x": feeds["x"].astype(np.float64)}, r"input 'x' is float64, the model takes float"),
        ({"x": feeds["x"][0]}, r"input 'x' has shape \[3, 6, 6\], the model takes \[1, 3, 6, 6\]"),
    ]:
        with pytest.raises(UsageError, match=r"^m\.onnx: the inputs do not fit the probe: " + says):
            run(bad)


def test_onnxruntime_message_is_one_clean_line() -> None:
    exc = RuntimeError(
        "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Conv node. Name:'c1' Status Message: "
        "/src/onnxruntime/core/providers/cpu/nn/conv.cc:42 onnxruntime::Conv::Compute(ctx) W.dims() == 4 was false.\n"
        "Kernel shape mismatch"
    )
    assert onnxruntime_message(exc) == "Conv node 'c1': Kernel shape mismatch"
    assert (
        onnxruntime_message(ValueError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model failed:\nbad"))
        == "Load model failed: bad"
    )
    assert len(onnxruntime_message(RuntimeError("x" * 1000))) == 300


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


# -- first-contact sweep of session 8 (was tests/test_contact7.py) --


def test_runtime_names_dynamic_dimensions_as_question_marks(tmp_path: Path) -> None:
    """Before: 'the model takes ['N', 3, 'H', 'W']' (onnxruntime's dim names; an exporter's
    'DynamicDimension.0')."""
    from onnxprune.errors import UsageError
    from onnxprune.runtime import session

    model = tmp_path / "m.onnx"
    onnx.save(dynamic_hw_model(), model)
    run_model = session(str(model), source="m.onnx")
    with pytest.raises(UsageError) as err:
        run_model({"x": np.zeros((1, 3, 8), np.float32)})
    assert (
        str(err.value)
        == "m.onnx: the inputs do not fit the model: input 'x' has shape [1, 3, 8], the model takes [?, 3, ?, ?]"
    )


@pytest.mark.parametrize(
    ("module", "load", "missing"),
    [
        ("onnxruntime", "onnxprune.runtime:_onnxruntime", "onnxruntime is not installed"),
        ("openvino", "onnxprune.openvino_ir:require_openvino", "openvino is not installed"),
        ("nncf", "onnxprune.nncf_backend:require_nncf", "nncf is not installed"),
    ],
)
def test_ctrl_c_while_a_backend_loads_is_an_interrupt_not_a_missing_backend(
    monkeypatch: pytest.MonkeyPatch, module: str, load: str, missing: str
) -> None:
    """Ctrl-C while onnxruntime loaded (its C extension's import turns the KeyboardInterrupt into
    an ImportError: 'PyCapsule_Import could not import module "datetime"') said 'onnxruntime is
    not installed (pip install onnxruntime)', exit 2, to a user who has it. Now an interrupt (the
    CLI: 'onnxprune: interrupted', 130); an installed backend that fails to import says so."""
    import builtins
    import importlib

    from onnxprune.errors import BackendMissing

    where, _, name = load.partition(":")
    loader = getattr(importlib.import_module(where), name)
    real_import = builtins.__import__
    failure: list[ImportError] = []

    def failing(target: str, *args: object, **kwargs: object) -> object:
        if target == module:
            raise failure[0]
        return real_import(target, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing)
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as interrupt:
        failure.append(ImportError('PyCapsule_Import could not import module "datetime"'))
        failure[0].__cause__ = interrupt
    with pytest.raises(KeyboardInterrupt):
        loader()
    failure[0] = ImportError("libfoo.so: cannot open shared object file")  # installed, but broken
    with pytest.raises(BackendMissing) as broken:
        loader()
    assert (
        str(broken.value) == f"{module} is installed but cannot be imported: libfoo.so: cannot open shared object file"
    )
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # not installed
    with pytest.raises(BackendMissing, match=f"^{missing}"):
        loader()
