"""A short seeded run of the file mutation fuzzer (tools/fuzz_files.py, benchmarks/fuzz_files.md
for the long one): mutated fixtures, one with external data, through analyze and prune in this
process (a sample also through ``python -m onnxprune``). No internal error, no traceback;
every refusal is one line naming the file; a file that is still valid prunes."""

from __future__ import annotations

import random
import shutil
import sys
from collections import Counter
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from file_mutations import Model, mutate  # noqa: E402
from fuzz_files import classify, run_inprocess, run_subprocess  # noqa: E402

FILES = 300
MODELS = ("residual.onnx", "family_conv.onnx", "family_concat_split.onnx", "yolo_like.onnx", "residual_qdq.onnx")


def _models(tmp: Path) -> list[Model]:
    models = []
    for name in MODELS:
        folder = tmp / Path(name).stem
        folder.mkdir()
        shutil.copy(ROOT / "fixtures" / name, folder / name)
        models.append(Model(folder / name))
    folder = tmp / "external"  # every weight in residual.onnx.data beside it
    folder.mkdir()
    onnx.save(
        onnx.load(ROOT / "fixtures" / "residual.onnx"),
        folder / "residual.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="residual.onnx.data",
        size_threshold=0,
    )
    models.append(Model(folder / "residual.onnx"))
    assert models[-1].external
    return models


def _check(code: int, err: str, path: Path, what: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith(f"onnxprune: error: {path}: "), f"{what}: {err}"
        return "refused"
    assert code == 0 and not lines, f"{what}: exit {code}: {err}"  # 1 (a failed surgery) and 3 (a bug) are findings
    return "ok"


def test_seeded_file_mutations(tmp_path: Path) -> None:
    models = _models(tmp_path)
    rng = random.Random(20261130)
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    sampled = []
    for i in range(FILES):
        m = models[i % len(models)]
        mutant = mutate(m, rng)
        path = m.path.parent / "mutant.onnx"
        path.write_bytes(mutant.data)
        what = f"#{i} {m.path.parent.name} {mutant.kind} ({mutant.detail})"
        code, err = run_inprocess(["analyze", str(path), "-q"])
        outcome = _check(code, err, path, what)
        if outcome == "ok":
            code, err = run_inprocess(["prune", str(path), "-o", str(tmp_path / "out.onnx"), "-q"])
            outcome = _check(code, err, path, what)
        if mutant.valid:
            assert outcome == "ok", what
        outcomes[outcome] += 1
        kinds[mutant.kind] += 1
        if i % 100 == 7:  # a sample through the real command line
            sampled.append((path.read_bytes(), m, outcome))
            keep = m.path.parent / f"sample{i}.onnx"
            shutil.copy(path, keep)
            o = run_subprocess(["analyze", str(keep), "-q"], timeout=60)
            assert classify(o, str(keep)) == outcome or (outcome == "refused") != (o.code == 0), (what, o)
    # The run reaches both ends: files refused at load, files that still prune; and every kind.
    assert outcomes["refused"] >= FILES // 3 and outcomes["ok"] >= FILES // 10, outcomes
    assert len(kinds) >= 15, kinds
    assert len(sampled) == 3
