"""Mutation fuzzing of model files: every malformed file must be refused with one line naming
the file and what is wrong (exit 2), never an internal error (exit 3), a traceback, a crash or
a hang, and with bounded memory; a mutated file that is still a valid model prunes normally.

Mutations: tools/file_mutations.py (seeded; byte flips, truncations, protobuf fields deleted,
duplicated or rewritten, invalid UTF-8, missing and looping references, attributes of the wrong
type, external data past its file's end, a weight value changed so the file stays valid).

Each mutated file goes through ``onnxprune analyze`` then ``onnxprune prune`` (with
verification) in a forked child of this process (everything imported once; a 60 s alarm; the
child's peak memory from wait4), and every --subprocess-every'th file also through real
``python -m onnxprune`` subprocesses. Writes benchmarks/fuzz_files.md.

    PYTHONPATH=$PWD python tools/fuzz_files.py [--count 20000] [--seed 0] [--models a.onnx,...]
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from file_mutations import Model, mutate

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("ONNXPRUNE_CORPUS", "/work/corpus"))
TIMEOUT = 60  # seconds per command

__all__ = ["Outcome", "classify", "run_forked", "run_inprocess", "run_subprocess"]


# ---------------------------------------------------------------- running


@dataclass
class Outcome:
    command: str
    code: int | None  # None: killed by a signal
    first_line: str
    lines: int
    peak_kb: int
    seconds: float
    signal: int = 0


def _commands(path: str, out: str, extra: Sequence[str]) -> list[tuple[str, list[str]]]:
    return [("analyze", ["analyze", path, "-q", *extra]), ("prune", ["prune", path, "-o", out, "-q", *extra])]


def run_inprocess(argv: list[str]) -> tuple[int, str]:
    """cli.main in this process; (exit code, stderr). Tracebacks escape as exceptions."""
    from onnxprune import cli

    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = cli.main(argv)
    return code, err.getvalue()


def run_forked(argv: list[str], timeout: int = TIMEOUT) -> Outcome:
    """cli.main in a forked child (this process's imports are shared): exit code, stderr,
    the child's peak memory (wait4), killed after ``timeout`` seconds."""
    fd, errfile = tempfile.mkstemp(prefix="fuzzerr")
    start = time.time()
    pid = os.fork()
    if pid == 0:  # the child
        code = 99
        try:
            signal.alarm(timeout)
            os.dup2(fd, 2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            code = run_inprocess_raw(argv)
        except BaseException:
            import traceback

            traceback.print_exc(file=sys.stderr)
            code = 98
        finally:
            try:
                sys.stderr.flush()
            finally:
                os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.time() - start
    os.close(fd)
    text = Path(errfile).read_text(errors="replace")
    os.remove(errfile)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    code = os.waitstatus_to_exitcode(status)
    sig = -code if code < 0 else 0
    return Outcome(argv[0], None if sig else code, lines[0] if lines else "", len(lines), usage.ru_maxrss, seconds, sig)


def run_inprocess_raw(argv: list[str]) -> int:
    from onnxprune import cli

    code = cli.main(argv)
    sys.stdout.flush()
    return code


def run_subprocess(argv: list[str], timeout: int = TIMEOUT) -> Outcome:
    """``python -m onnxprune`` in a subprocess: exit code, first stderr line, peak memory."""
    with tempfile.TemporaryFile() as err:
        start = time.time()
        p = subprocess.Popen([sys.executable, "-m", "onnxprune", *argv], stdout=subprocess.DEVNULL, stderr=err)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.time() - start
        err.seek(0)
        lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
    code = p.returncode
    sig = -code if code < 0 else 0
    return Outcome(argv[0], None if sig else code, lines[0] if lines else "", len(lines), usage.ru_maxrss, seconds, sig)


def classify(o: Outcome, path: str) -> str:
    """ok / verification failed / refused / bad message / internal error / crash / hang."""
    if o.signal == signal.SIGALRM or (o.signal == signal.SIGKILL and o.seconds >= TIMEOUT - 1):
        return "hang"
    if o.signal:
        return "crash"
    if o.code == 0:
        return "ok"
    if o.code == 1:
        return "verification failed"
    if o.code == 2:
        return "refused" if o.lines == 1 and path in o.first_line and "Traceback" not in o.first_line else "bad message"
    return "internal error"


# ---------------------------------------------------------------- the benchmark


# (path, extra arguments, share of the files): more files from the models that run fastest.
DEFAULT_MODELS = [
    (ROOT / "fixtures" / "residual.onnx", [], 3),
    (CORPUS / "vcb_captcha_cnn_tf2onnx_nhwc.onnx", [], 3),
    (CORPUS / "basic_pitch_nmp_tf2onnx.onnx", [], 2),
    (CORPUS / "oww_speech_embedding_tf2onnx_nhwc.onnx", [], 3),
    (CORPUS / "ppocrv6_det_tiny_paddle.onnx", ["--input-shape", "x:1,3,64,64"], 2),
    (CORPUS / "resnet18_malimg_torchdynamo_extdata.onnx", [], 1),  # external data (44.8 MB)
]


def _models(spec: str | None, workdir: Path) -> list[Model]:
    """The models to mutate, each copied into its own folder (with its external data)."""
    chosen = (
        DEFAULT_MODELS
        if not spec
        else [(Path(p.split(":", 1)[0]), p.split(":", 1)[1].split() if ":" in p else [], 1) for p in spec.split(",")]
    )
    models = []
    for path, extra, share in chosen:
        folder = workdir / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)
        m = Model(folder / path.name, extra)
        m.share = share
        for s in m.by_name.get("StringStringEntryProto.value", ()):
            parent = s.parents[-1] if s.parents else None
            if parent is None or parent.name != "TensorProto.external_data":
                continue
            entry = onnx.StringStringEntryProto.FromString(m.data[parent.payload])
            if entry.key == "location" and not (folder / entry.value).exists():
                shutil.copy(path.parent / entry.value, folder / entry.value)
        models.append(m)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", help="comma-separated model paths (PATH or 'PATH:--input-shape x:1,3,8,8')")
    parser.add_argument(
        "--subprocess-every", type=int, default=200, help="also run every Nth file through python -m onnxprune"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "fuzz_files.md"))
    parser.add_argument("--log", help="JSON lines of every outcome")
    parser.add_argument("--workdir", help="where mutated files are written (default: a temporary folder)")
    args = parser.parse_args()

    # Everything the commands import, imported once: each forked child shares it (and a run
    # is not affected by edits to the sources while it goes on).
    import importlib
    import pkgutil

    import onnxruntime  # noqa: F401

    import onnxprune

    for info in pkgutil.walk_packages(onnxprune.__path__, "onnxprune."):
        if info.name != "onnxprune.__main__":
            importlib.import_module(info.name)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fuzz_files-"))
    models = _models(args.models, workdir)
    # What the commands import lazily, imported here too (not by every child); onnxruntime
    # sessions are only made in the children (a forked copy of its thread pools would not run).
    run_inprocess(["analyze", str(models[0].path), "-q", *models[0].extra_args])
    run_inprocess(
        ["prune", str(models[0].path), "-o", str(workdir / "warm.onnx"), "-q", "--no-verify", *models[0].extra_args]
    )
    gc.freeze()  # the children's collector leaves the parent's objects alone (no copy-on-write)
    log = open(args.log, "w") if args.log else None
    rng = random.Random(args.seed)
    counts: Counter[tuple[str, str]] = Counter()  # (model, outcome)
    kinds: Counter[tuple[str, str]] = Counter()  # (mutation, outcome)
    findings: list[str] = []
    clean: dict[str, Outcome] = {}
    worst: dict[str, tuple[int, str]] = {}
    slowest = (0.0, "")
    sub_runs = sub_agree = 0
    for m in models:
        out = str(m.path.parent / "out.onnx")
        for name, argv in _commands(str(m.path), out, m.extra_args):
            o = run_forked(argv)
            clean[f"{m.path.name} {name}"] = o
            print(
                f"clean {m.path.name} {name}: exit {o.code} {o.peak_kb / 1024:.0f} MB {o.seconds:.2f} s {o.first_line[:100]}",
                flush=True,
            )
    start = time.time()
    schedule = [m for m in models for _ in range(m.share)]
    for i in range(args.count):
        m = schedule[i % len(schedule)]
        mutant = mutate(m, rng)
        path = m.path.parent / f"mutant{m.path.suffix}"
        path.write_bytes(mutant.data)
        out = str(m.path.parent / "out.onnx")
        results = []
        for name, argv in _commands(str(path), out, m.extra_args):
            o = run_forked(argv)
            cls = classify(o, str(path))
            results.append((name, o, cls))
            if i % args.subprocess_every == 0:
                s = run_subprocess(argv)
                sub_runs += 1
                scls = classify(s, str(path))
                sub_agree += scls == cls or {scls, cls} <= {"ok", "verification failed"}
                if scls not in ("ok", "refused", "verification failed"):
                    findings.append(
                        f"{m.path.name} #{i} {mutant.kind} ({mutant.detail}) subprocess {name}: {scls}: {s.first_line[:200]}"
                    )
            if cls == "refused" and name == "analyze":
                break  # refused at load: prune would refuse it the same way
        worst_cls = next(
            (c for _, _, c in results if c not in ("ok", "refused", "verification failed")), results[-1][2]
        )
        if mutant.valid and worst_cls != "ok":
            findings.append(
                f"{m.path.name} #{i} {mutant.kind} ({mutant.detail}): a valid model, but {worst_cls}: {results[-1][1].first_line[:200]}"
            )
        counts[(m.path.name, worst_cls)] += 1
        kinds[(mutant.kind, worst_cls)] += 1
        for name, o, cls in results:
            if cls == "verification failed":  # not an error of onnxprune's, but worth a look
                findings.append(
                    f"{m.path.name} #{i} {mutant.kind} ({mutant.detail}) {name}: {cls}: {o.first_line[:200]}"
                )
            if cls not in ("ok", "refused", "verification failed"):
                findings.append(
                    f"{m.path.name} #{i} {mutant.kind} ({mutant.detail}) {name}: {cls}: {o.first_line[:200]}"
                )
                keep = workdir / "findings"
                keep.mkdir(exist_ok=True)
                shutil.copy(path, keep / f"{m.path.stem}_{i}{m.path.suffix}")
            if o.peak_kb > worst.get(m.path.name, (0, ""))[0]:
                worst[m.path.name] = (o.peak_kb, f"#{i} {mutant.kind} ({mutant.detail}) {name}")
            if o.seconds > slowest[0]:
                slowest = (o.seconds, f"{m.path.name} #{i} {mutant.kind} {name}")
        if log:
            log.write(
                json.dumps(
                    {
                        "i": i,
                        "model": m.path.name,
                        "kind": mutant.kind,
                        "detail": mutant.detail,
                        "results": [
                            (n, o.code, o.signal, o.first_line[:300], o.peak_kb, round(o.seconds, 3), c)
                            for n, o, c in results
                        ],
                    }
                )
                + "\n"
            )
            log.flush()
        if (i + 1) % 100 == 0:
            print(f"{i + 1} files, {time.time() - start:.0f} s, findings {len(findings)}", flush=True)
        if (i + 1) % 1000 == 0 or i + 1 == args.count:  # a report so far, should the run be cut short
            _write_report(
                args,
                i + 1,
                models,
                counts,
                kinds,
                findings,
                clean,
                worst,
                slowest,
                time.time() - start,
                sub_runs,
                sub_agree,
            )


def _write_report(
    args, done, models, counts, kinds, findings, clean, worst, slowest, seconds, sub_runs, sub_agree
) -> None:
    outcomes = ["ok", "verification failed", "refused", "bad message", "internal error", "crash", "hang"]
    total = Counter()
    for (_, c), n in counts.items():
        total[c] += n
    lines = [
        "# Mutation fuzzing of model files (tools/fuzz_files.py)",
        "",
        (
            f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Seed {args.seed}: {done} mutated files (of {args.count} asked) from "
            f"{len(models)} models, each through `onnxprune analyze` then `onnxprune prune` (with verification) in a forked "
            f"child (a {TIMEOUT} s limit; peak memory from wait4), every {args.subprocess_every}th also through "
            f"`python -m onnxprune` subprocesses ({sub_runs} runs, {sub_agree} with the same outcome). A file refused by "
            f"`analyze` is not pruned (it is refused at load). Time: {seconds:.0f} s ({seconds / max(done, 1):.3f} s per file, one worker on a shared 2-core machine)."
        ),
        "",
        (
            "Outcomes: ok (exit 0), verification failed (exit 1), refused (exit 2, one line naming the file), bad message "
            "(exit 2 otherwise), internal error (exit 3 or a traceback), crash (a signal), hang (the time limit)."
        ),
        "",
        "| model | " + " | ".join(outcomes) + " | peak memory, clean (prune) | peak memory, worst mutant |",
        "|---|" + "---|" * (len(outcomes) + 2),
    ]
    for m in models:
        name = m.path.name
        c = clean.get(f"{name} prune")
        w = worst.get(name, (0, ""))
        lines.append(
            f"| {name} | "
            + " | ".join(str(counts[(name, o)]) for o in outcomes)
            + f" | {c.peak_kb / 1024:.0f} MB (exit {c.code}) | {w[0] / 1024:.0f} MB ({w[1]}) |"
        )
    lines.append("| **all** | " + " | ".join(f"**{total[o]}**" for o in outcomes) + " | | |")
    lines += ["", "By mutation:", "", "| mutation | " + " | ".join(outcomes) + " |", "|---|" + "---|" * len(outcomes)]
    for kind in sorted({k for k, _ in kinds}):
        lines.append(f"| {kind} | " + " | ".join(str(kinds[(kind, o)]) for o in outcomes) + " |")
    lines += ["", f"Slowest command: {slowest[0]:.1f} s ({slowest[1]}).", "", f"Findings: {len(findings)}"]
    lines += [f"- {f}" for f in findings[:200]]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
