"""The README's commands and Python examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _first_block() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block, "README must start with a bash block"
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


def test_readme_starts_with_two_commands() -> None:
    lines = _first_block()
    assert len(lines) == 2
    assert "onnxprune prune fixtures/" in lines[0]
    assert "pytest" in lines[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert lines[1] in ci, ".ci/run must call the README's test command"


def test_readme_main_command_runs(tmp_path: Path) -> None:
    install, main_cmd = _first_block()[0].split(" && ")
    assert install.startswith("python -m pip install")
    args = main_cmd.split()
    assert args[0] == "onnxprune"
    args = [str(ROOT / a) if a.startswith("fixtures/") else a for a in args[1:]]
    p = subprocess.run(
        [sys.executable, "-m", "onnxprune", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    assert "verification: PASSED" in p.stdout
    assert (tmp_path / "residual_pruned.onnx").exists() and (tmp_path / "report.json").exists()


@pytest.mark.parametrize("index", range(len(re.findall(r"```python\n", README))))
def test_readme_python_examples(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = re.findall(r"```python\n(.*?)```", README, re.S)[index]
    monkeypatch.chdir(tmp_path)
    os.symlink(ROOT / "fixtures", tmp_path / "fixtures")
    exec(compile(code, f"README.md python block {index}", "exec"), {})


def _other_cli_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)[1:]
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("onnxprune "):
                commands.append(line.strip())
    return commands


@pytest.mark.parametrize("command", _other_cli_commands())
def test_readme_cli_examples(command: str, tmp_path: Path) -> None:
    args = [str(ROOT / a) if a.startswith("fixtures/") else a for a in command.split()[1:]]
    p = subprocess.run(
        [sys.executable, "-m", "onnxprune", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    if args[0] == "prune":
        assert "verification: PASSED" in p.stdout


def test_readme_documents_every_cli_option() -> None:
    from onnxprune.cli_args import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in README, f"{name} {flag} is not documented in the README"
