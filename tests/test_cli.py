"""The CLI contract: exit codes, one-line errors without traceback, nothing written on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import one_line_error, run_cli
from onnx import numpy_helper

import onnxprune
from onnxprune import cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_prune_writes_model_and_report(tmp_path: Path) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    p = run_cli("prune", str(FIXTURES / "residual.onnx"), "-o", str(out), "--report", str(report))
    assert p.returncode == 0, p.stderr
    assert "verification: PASSED" in p.stdout
    assert "channels kept, by reason" in p.stdout
    data = json.loads(report.read_text())
    assert data["channels_removed"] > 0 and data["verification"]["passed"]
    assert data["macs_after"] < data["macs_before"]
    assert all(g["reasons"] for g in data["kept_groups"])
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_every_kept_group_has_a_reason() -> None:
    r = onnxprune.prune(FIXTURES / "yolo_like.onnx")
    kept = {g.id for g in r.report.kept_groups}
    all_kept = {g.id for g in r.analysis.groups} - set(r.plan.removed_groups)
    assert kept == all_kept


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"\x8f\x01\x02garbage\xff" * 50, "not an ONNX model"),
        (b"hello, this is text\n", "not an ONNX model"),
    ],
)
def test_bad_files_exit_2_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    out = tmp_path / "out.onnx"
    p = run_cli("prune", str(bad), "-o", str(out))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert message in p.stderr and str(bad) in p.stderr
    assert not out.exists()
    assert bad.read_bytes() == content


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = FIXTURES / "residual.onnx"
    cases = [
        (["prune", str(tmp_path), "-o", str(tmp_path / "o.onnx")], "not a file"),
        (["prune", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx")], "no such file"),
        (["prune", str(model), "-o", str(model)], "output must differ"),
        (["prune", str(model), "-o", str(tmp_path / "nodir" / "o.onnx")], "does not exist"),
        (["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--input-shape", "input:1,x"], "must be integers"),
        (
            ["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--input-shape", "nope:1,3,16,16"],
            "model's inputs are",
        ),
        (["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--criterion", "magic"], "unknown criterion"),
        (
            ["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--reconstruct-from", "pruned"],
            "--reconstruct-from pruned given without --reconstruct",
        ),
    ]
    before = model.read_bytes()
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert not (tmp_path / "o.onnx").exists()
    assert model.read_bytes() == before


def test_verification_failure_exits_1_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:

    import onnxprune.api as api

    real = api.prune_deferred

    def broken(*args, **kwargs):
        deferred = real(*args, **kwargs)
        model = deferred.complete()
        init = next(i for i in model.graph.initializer if len(i.dims) == 4)
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.1), init.name))
        return deferred

    monkeypatch.setattr(api, "prune_deferred", broken)
    out = tmp_path / "o.onnx"
    assert cli.main(["prune", str(FIXTURES / "residual.onnx"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "verification failed" in err and "output" in err
    assert not out.exists()
    assert not list(tmp_path.glob(".onnxprune-*"))  # the staged file it verified is gone too


def test_no_verify_and_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.onnx"
    assert cli.main(["prune", str(FIXTURES / "shuffle.onnx"), "-o", str(out), "--no-verify", "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert out.exists()


def test_analyze_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    j = tmp_path / "g.json"
    assert cli.main(["analyze", str(FIXTURES / "dense_concat.onnx"), "--json", str(j)]) == 0
    assert "channel groups" in capsys.readouterr().out
    data = json.loads(j.read_text())
    assert data["groups"] and all("members" in g for g in data["groups"])


def test_external_data_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    assert cli.main(["prune", str(FIXTURES / "residual.onnx"), "-o", str(out), "--external-data", "-q"]) == 0
    data = tmp_path / "m.onnx.data"
    assert data.exists() and data.stat().st_size > out.stat().st_size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxprune-")]
    # the written model (with its external data) is valid input again, read from its own folder
    again = tmp_path / "again.onnx"
    assert cli.main(["prune", str(out), "-o", str(again), "-q"]) == 0
    onnx.checker.check_model(str(again), full_check=True)


def test_input_with_dynamic_spatial_dims_asks_for_input_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 3, "H", "W"])
    b.output(b.conv(b.op("Relu", b.conv(x, 4, zero=(1,))), 2))
    path = tmp_path / "dyn.onnx"
    onnx.save(b.build(), path)
    assert cli.main(["prune", str(path), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert "give --input-shape x:" in err and str(path) in err
    assert cli.main(["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--input-shape", "x:1,3,8,8", "-q"]) == 0


def test_sizes_past_the_protobuf_limit() -> None:
    """Over 2 GB protobuf refuses ByteSize/SerializeToString: the size falls back to the
    initializers' and serialisation reports 'cannot' so callers go through external data."""
    from onnxprune.saving import PROTOBUF_LIMIT, serialize, serialized_size

    class Tensor:
        def __init__(self, n: int) -> None:
            self.n = n

        def ByteSize(self) -> int:
            return self.n

    class Huge:
        class graph:
            initializer = (Tensor(2**30), Tensor(2**30 + 5))

        def ByteSize(self) -> int:
            raise ValueError("Failed to serialize proto")

        def SerializeToString(self) -> bytes:
            raise ValueError("Failed to serialize proto")

    assert serialized_size(Huge()) == 2**31 + 5 > PROTOBUF_LIMIT
    assert serialize(Huge()) is None


@pytest.mark.parametrize("command", ["prune", "sensitivity"])
def test_a_plot_failing_to_write_names_the_plot_not_a_staging_file(tmp_path, monkeypatch, capsys, command) -> None:
    import errno

    import onnxprune.render
    from onnxprune.cli import main

    def full_disk(data, path: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(onnxprune.render, "plot_report" if command == "prune" else "plot_sensitivity", full_disk)
    digits, plot = str(FIXTURES / "digits_cnn.onnx"), tmp_path / "p.png"
    calibration = ["--calibration", str(FIXTURES / "digits_calibration.npz"), "--ratios", "0.5"]
    args = {
        "prune": ["prune", digits, "-o", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "r.json")],
        "sensitivity": ["sensitivity", digits, *calibration, "--json", str(tmp_path / "s.json")],
    }[command]
    assert main([*args, "--plot", str(plot), "-q"]) == 2
    assert capsys.readouterr().err == f"onnxprune: error: {plot}: No space left on device; nothing written\n"
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_plan_file_is_a_one_line_error_naming_it(tmp_path) -> None:
    from onnxprune.planning import PruningPlan

    data = json.loads(PruningPlan(criterion="l2", removed_groups=(1,)).to_json())
    data["kept_reasons"] = {"x": []}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(data))
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    model = str(FIXTURES / "digits_cnn.onnx")
    for given, why in (
        (plan, "malformed plan: kept_reasons names group 'x', not a group number"),
        (binary, "not JSON (not UTF-8 text)"),
    ):
        out = tmp_path / "o.onnx"
        r = run_cli("prune", model, "-o", str(out), "--plan", str(given), "-q")
        assert (r.returncode, r.stderr) == (2, f"onnxprune: error: {given}: {why}\n")
        assert not out.exists()


@pytest.mark.parametrize(
    "command",
    [[], ["prune"], ["quantize"], ["convert"], ["bench"], ["latency-table"], ["sensitivity"], ["analyze"], ["explain"]],
)
def test_every_help_says_what_the_exit_codes_mean(command, capsys) -> None:
    # A script needs them; they were only in the README.
    from onnxprune.errors import UsageError, VerificationFailed

    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 success; 1 verification failed (nothing written); 2 bad input or usage" in text
    assert "3 internal error (a bug; ONNXPRUNE_DEBUG=1 for a traceback); 130 interrupted" in text
    assert (VerificationFailed("x").exit_code, UsageError("x").exit_code) == (1, 2)


@pytest.mark.parametrize(("flag", "keyword"), [("--inputs", "verification_inputs"), ("--calibration", "calibration")])
def test_a_missing_inputs_file_is_one_message_from_the_library_and_the_cli(
    tmp_path: Path, flag: str, keyword: str
) -> None:
    """The API said 'x.npz: cannot read inputs ([Errno 2] No such file or directory: ...)' or
    'x.npz: calibration inputs not found' where the CLI said 'x.npz: --inputs file not found' or
    '--calibration inputs not found (...)': one typed error now (InputsNotFound, also a
    FileNotFoundError), the library's message, printed by the CLI as it is."""
    from cli_helpers import one_line_error

    from onnxprune.errors import InputsNotFound, UsageError

    missing = tmp_path / "nope.npz"
    model = str(FIXTURES / "residual.onnx")
    with pytest.raises(InputsNotFound) as caught:
        onnxprune.prune(model, "l2", ratio=0.2, **{keyword: str(missing)})
    error = caught.value
    assert isinstance(error, UsageError) and isinstance(error, FileNotFoundError) and error.filename == str(missing)
    kind = "verification inputs not found (an .npz file of arrays keyed by input name)"
    if flag == "--calibration":
        kind = "calibration inputs not found (an .npz file or a folder of images)"
    assert str(error) == f"{missing}: {kind}"
    line = one_line_error(run_cli("prune", model, "-o", tmp_path / "o.onnx", flag, missing))
    assert line == f"onnxprune: error: {error}"
    if flag == "--calibration":
        assert one_line_error(run_cli("sensitivity", model, "--calibration", missing)) == line
    calibration = missing if flag == "--calibration" else FIXTURES / "digits_calibration.npz"
    quantize = ["quantize", model, "-o", tmp_path / "q.onnx", "--calibration", calibration]
    assert one_line_error(run_cli(*quantize, *([] if flag == "--calibration" else [flag, missing]))) == line
    assert list(tmp_path.iterdir()) == []


def test_every_json_the_cli_writes_starts_with_its_format(tmp_path: Path) -> None:
    """A pipeline reads the kind and layout version of a JSON file from its first key
    (plans and latency tables had one; the report, analyze, explain, sensitivity and bench had not)."""
    model = FIXTURES / "digits_cnn.onnx"
    calibration = FIXTURES / "digits_calibration.npz"
    runs = {
        "onnxprune-report/1": ["prune", model, "-o", tmp_path / "o.onnx", "--report", "{j}"],
        "onnxprune-plan/1": ["prune", model, "-o", tmp_path / "p.onnx", "--save-plan", "{j}"],
        "onnxprune-analysis/1": ["analyze", model, "--json", "{j}"],
        "onnxprune-explain/1": ["explain", model, "--json", "{j}"],
        "onnxprune-sensitivity/1": [
            "sensitivity",
            model,
            "--calibration",
            calibration,
            "--ratios",
            "0.5",
            "--json",
            "{j}",
        ],
        "onnxprune-bench/1": [
            "bench",
            model,
            "--backend",
            "onnxruntime",
            "--rounds",
            "1",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--throughput-seconds",
            "0.01",
            "--json",
            "{j}",
        ],
    }
    for i, (fmt, args) in enumerate(runs.items()):
        path = tmp_path / f"{i}.json"
        p = run_cli(*[str(path) if a == "{j}" else a for a in args], "-q")
        assert p.returncode == 0, (fmt, p.stderr)
        data = json.loads(path.read_text())
        assert next(iter(data.items())) == ("format", fmt)
    assert [m["path"] for m in data["models"]] == [str(model)]  # bench: one entry per model, in order
    report = onnxprune.prune(model).report.to_dict()
    assert next(iter(report.items())) == ("format", "onnxprune-report/1")


# -- first-contact sweep of session 8 (was tests/test_contact7.py) --


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["prune", "{m}", "-o", "p.onnx", "--ir", "p.xml", "--report", "p.bin"],
            "p.bin: --report and --ir (its .bin) name the same file",
        ),
        (
            ["prune", "{m}", "-o", "p.onnx", "--external-data", "--markdown", "p.onnx.data"],
            "p.onnx.data: -o (its external data) and --markdown name the same file",
        ),
        (
            ["quantize", "{m}", "-o", "q.xml", "--calibration", "{cal}", "--report", "q.bin"],
            "q.bin: -o (its .bin) and --report name the same file",
        ),
    ],
)
def test_two_outputs_of_one_run_naming_one_file_are_refused(tmp_path: Path, args: list, message: str) -> None:
    """Before: prune --ir p.xml --report p.bin exited 0 with the report written over the IR's
    weights (an IR that no longer loads)."""
    model = FIXTURES / "digits_cnn.onnx"
    argv = [a.format(m=model, cal=FIXTURES / "digits_calibration.npz") for a in args]
    p = run_cli(*argv, cwd=tmp_path)
    assert one_line_error(p) == f"onnxprune: error: {message}; give another file name"
    assert list(tmp_path.iterdir()) == []


def test_prune_refuses_an_xml_output_it_would_fill_with_onnx(tmp_path: Path) -> None:
    """Before: prune -o p.xml wrote an ONNX model named p.xml, exit 0 (quantize -o q.xml writes an IR)."""
    p = run_cli("prune", str(FIXTURES / "residual.onnx"), "-o", "p.xml", cwd=tmp_path)
    assert one_line_error(p) == (
        "onnxprune: error: p.xml: prune writes an ONNX model, not an OpenVINO IR; give -o OUT.onnx, and --ir OUT.xml for the IR"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_output_given_as_a_second_file_is_named(tmp_path: Path) -> None:
    """prune m.onnx out.onnx (as cp takes it) said only '-o/--output is required'."""
    digits = FIXTURES / "digits_cnn.onnx"
    assert one_line_error(run_cli("prune", digits, tmp_path / "out.onnx", "--ratio", "0.3")) == (
        "onnxprune prune: error: the following arguments are required: -o/--output: "
        f"did you mean -o {tmp_path / 'out.onnx'}? (see onnxprune prune --help)"
    )
    assert not (tmp_path / "out.onnx").exists()


def test_a_folder_as_inputs_says_what_inputs_take(tmp_path: Path) -> None:
    """prune --inputs FOLDER said "cannot read inputs ([Errno 21] Is a directory: 'imgs')"."""
    (tmp_path / "imgs").mkdir()
    args = ["prune", FIXTURES / "digits_cnn.onnx", "-o", tmp_path / "o.onnx", "--ratio", "0.3"]
    assert one_line_error(run_cli(*args, "--inputs", tmp_path / "imgs")) == (
        f"onnxprune: error: {tmp_path / 'imgs'}: a folder, but --inputs takes an .npz of arrays keyed by input name; "
        "a folder of images can be --calibration (with --preprocess), which holds out every 4th image to measure "
        "the fidelity"
    )
    assert not (tmp_path / "o.onnx").exists()


def test_argument_errors_are_one_line(tmp_path: Path) -> None:
    """prune --macs-target 50% (or a missing -o, an unknown option) printed prune's whole usage,
    35 lines, above the one line that said what was wrong; now that line alone, exit 2."""
    digits = FIXTURES / "digits_cnn.onnx"
    line = one_line_error(run_cli("prune", digits, "-o", tmp_path / "o.onnx", "--macs-target", "50%"))
    assert line == (
        "onnxprune prune: error: argument --macs-target: '50%' is a percentage; it takes a fraction: did you mean 0.5? "
        "(see onnxprune prune --help)"
    )
    assert one_line_error(run_cli("prune", digits)) == (
        "onnxprune prune: error: the following arguments are required: -o/--output (see onnxprune prune --help)"
    )
    assert one_line_error(run_cli("prnue", digits)).startswith("onnxprune: error: argument command: invalid choice")
