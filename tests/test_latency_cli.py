"""``onnxprune latency-table`` end to end, with the stand-in timer (hidden --timer option)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_latency_measure import chain_model

FAKE = ("--timer", "onnxprune.testing:step_timer")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxprune", *args], capture_output=True, text=True, timeout=120)


def test_latency_table_cli_builds_shows_and_reuses(tmp_path):
    model = chain_model(str(tmp_path / "chain.onnx"))
    cache = str(tmp_path / "cache")
    out = run_cli("latency-table", model, *FAKE, "--cache-dir", cache, "--json", str(tmp_path / "t.json"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"{model}: 2 units, baseline ") and "openvino CPU f32, batch 1" in lines[0]
    assert "step-timer 16" in lines[0] and "read from the cache" not in lines[0]
    # the stand-in timer's costs add up: not calibrated (no calibration line)
    assert lines[1].split()[:6] == ["unit", "(first", "layer)", "layers", "channels", "step"]
    rows = [ln.split() for ln in lines[2:4]]
    assert sorted(int(r[2]) for r in rows) == [48, 64] and {r[3] for r in rows} == {"16"}
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["format"] == "onnxprune-latency-table/1" and data["model"] == model
    assert sorted(u["step"] for u in data["units"]) == [16, 16]
    assert data["key"]["precision"] == "f32" and data["settings"]["batch"] == 1
    again = run_cli("latency-table", model, *FAKE, "--cache-dir", cache)
    assert again.returncode == 0 and "(read from the cache)" in again.stdout.splitlines()[0]
    assert again.stdout.splitlines()[2:] == lines[2:]


def test_latency_table_cli_options_reach_the_key(tmp_path):
    model = chain_model(str(tmp_path / "chain.onnx"))
    out = run_cli(
        "latency-table", model, *FAKE, "--cache-dir", str(tmp_path), "--batch", "2", "--threads", "1",
        "--hint", "throughput", "--precision", "bf16", "--json", str(tmp_path / "t.json"), "-q",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    key = json.loads((tmp_path / "t.json").read_text())["key"]
    assert (key["batch"], key["threads"], key["hint"], key["precision"]) == ("2", "1", "throughput", "bf16")


def test_latency_table_cli_plot(tmp_path):
    model = chain_model(str(tmp_path / "chain.onnx"))
    out = run_cli("latency-table", model, *FAKE, "--no-cache", "--plot", str(tmp_path / "t.png"), "-q")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_table_cli_bad_input(tmp_path):
    missing = run_cli("latency-table", str(tmp_path / "nope.onnx"), *FAKE, "--cache-dir", str(tmp_path))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [f"onnxprune: error: {tmp_path / 'nope.onnx'}: no such file"]
    static = chain_model(str(tmp_path / "static.onnx"), batch=1)
    out = run_cli("latency-table", static, *FAKE, "--cache-dir", str(tmp_path), "--batch", "3")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "static batch of 1; --batch 3 needs a dynamic batch" in out.stderr
    ort = run_cli("latency-table", static, "--backend", "onnxruntime", "--precision", "bf16", "--no-cache")
    assert ort.returncode == 2 and "onnxruntime" in ort.stderr and "Traceback" not in ort.stderr
    bad = run_cli("latency-table", static, *FAKE, "--json", str(tmp_path / "no" / "t.json"))
    assert bad.returncode == 2 and not os.path.exists(tmp_path / "no")
    # an --input-shape naming no input was ignored (exit 0, timed at the model's own shape)
    other = run_cli("latency-table", static, *FAKE, "--no-cache", "--input-shape", "y:1,3,8,8", "-q")
    assert (other.returncode, other.stderr) == (
        2,
        f"onnxprune: error: {static}: --input-shape names 'y', but the model's inputs are ['x']\n",
    )


# -- latency-table wrote --json, then failed in --plot: a half-written output -----------------


def test_latency_table_writes_json_and_plot_together_or_neither(tmp_path, monkeypatch, capsys) -> None:
    import errno

    from test_latency_measure import chain_model

    import onnxprune.latency.plot
    from onnxprune.cli import main

    model = chain_model(str(tmp_path / "chain.onnx"))

    def full_disk(table, path: str, title: str = "") -> None:
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(onnxprune.latency.plot, "plot_latency_table", full_disk)
    args = ["latency-table", model, "--timer", "onnxprune.testing:step_timer", "--no-cache", "-q"]
    code = main([*args, "--json", str(tmp_path / "t.json"), "--plot", str(tmp_path / "t.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"onnxprune: error: {tmp_path / 't.png'}: No space left on device; nothing written\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.onnx"]  # no JSON, no staged file
    monkeypatch.undo()
    assert main([*args, "--json", str(tmp_path / "t.json"), "--plot", str(tmp_path / "t.png")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.onnx", "t.json", "t.png"]
    assert json.loads((tmp_path / "t.json").read_text())["model"] == model


def test_latency_table_bad_numbers_name_their_flag(tmp_path):
    """--batch 0, --rounds 0/1 and --seconds-per-unit 0 said 'batch must be a positive integer' or
    'latency table: rounds must be >= 2 and seconds per unit > 0', naming no flag."""
    model = chain_model(str(tmp_path / "chain.onnx"))
    cases = [
        (["--batch", "0"], "--batch must be a positive integer, got 0"),
        (["--threads", "0"], "--threads must be a positive integer, got 0"),
        (["--rounds", "0"], "--rounds must be an integer >= 2, got 0"),
        (["--rounds", "1"], "--rounds must be an integer >= 2, got 1"),
        (["--seconds-per-unit", "0"], "--seconds-per-unit must be a positive number of seconds, got 0.0"),
    ]
    for flag, message in cases:
        out = run_cli("latency-table", model, *FAKE, "--no-cache", *flag)
        assert out.returncode == 2, flag
        assert out.stderr.strip().splitlines() == [f"onnxprune: error: {message}"], flag


def test_latency_table_dynamic_dims_hint_can_be_typed(tmp_path):
    """The hint was 'give --input-shape x:N,3,?,?': neither N nor ? is accepted. Now the batch and
    the model's fixed sizes are filled in and each size to choose is named; typed with sizes, it runs."""
    import onnx
    from dynamic_models import dynamic_hw_model

    model = tmp_path / "hw.onnx"
    onnx.save(dynamic_hw_model(), str(model))
    out = run_cli("latency-table", str(model), *FAKE, "--no-cache", "--batch", "2")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"onnxprune: error: {model}: input 'x' dimension 2 is dynamic; give --input-shape x:2,3,d2,d3 "
        "with d2, d3 the sizes to time"
    ]
    typed = run_cli("latency-table", str(model), *FAKE, "--no-cache", "--batch", "2", "--input-shape", "x:2,3,8,8")
    assert typed.returncode == 0, typed.stderr


def test_latency_table_takes_your_rules_and_keys_its_cache_by_them(tmp_path):
    """latency-table had no --rules: a model with a custom op (MyAct pins conv1's channels
    without its rule) had a table without the unit prune --rules plans on; and the cache did
    not tell the rules apart, so prune --rules --latency-target read the rule-less table."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = os.path.join(root, "fixtures", "custom_activation.onnx")
    rules = os.path.join(root, "fixtures", "custom_rules.py") + ":registry"
    cache = ("--cache-dir", str(tmp_path / "cache"))
    plain = run_cli("latency-table", model, *FAKE, *cache)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith(f"{model}: 0 units")
    mine = run_cli("latency-table", model, *FAKE, *cache, "--rules", rules, "--json", str(tmp_path / "t.json"))
    assert mine.returncode == 0, mine.stderr
    first = mine.stdout.splitlines()[0]
    assert first.startswith(f"{model}: 1 units") and "read from the cache" not in first
    assert mine.stdout.splitlines()[2].split()[:3] == ["conv1", "1", "8"]
    assert len(json.loads((tmp_path / "t.json").read_text())["key"]["rules"]) == 16
    # --config's rules key: the same rules, so the same table (from the cache)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"rules": rules, "config_list": []}))
    again = run_cli("latency-table", model, *FAKE, *cache, "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0].endswith("(read from the cache)")
    assert again.stdout.splitlines()[2:] == mine.stdout.splitlines()[2:]
    both = run_cli("latency-table", model, *FAKE, *cache, "--config", str(config), "--rules", rules)
    assert (
        both.returncode == 2
        and both.stderr == f"onnxprune: error: --rules {rules} and {config}'s rules {rules}: give one\n"
    )
    # and the plain table is still the plain one
    plain_again = run_cli("latency-table", model, *FAKE, *cache)
    assert plain_again.stdout.startswith(f"{model}: 0 units") and "read from the cache" in plain_again.stdout


def test_prune_takes_a_time_budget_for_the_latency_plans_evaluations(tmp_path):
    # --latency-evaluation-seconds S reaches the plan's evaluation budget (the report's order says
    # it); by default none: the count alone bounds the evaluations
    import numpy as np

    model = chain_model(str(tmp_path / "chain.onnx"), batch=1)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    base = ("prune", model, "-o", str(tmp_path / "out.onnx"), "--latency-target", "0.8", "--calibration", str(calib))
    out = run_cli(*base, *FAKE, "--latency-evaluation-seconds", "45", "--report", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    order = json.loads((tmp_path / "r.json").read_text())["latency"]["order"]
    assert order["seconds_budget"] == 45.0 and order["bound"] is None and "recovered" not in order
    bad = run_cli(*base, *FAKE, "--latency-evaluation-seconds", "0")
    assert (
        bad.returncode == 2
        and "--latency-evaluation-seconds must be a positive number of seconds, got 0.0" in bad.stderr
    )
