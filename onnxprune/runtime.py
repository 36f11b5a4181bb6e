"""Every onnxruntime session onnxprune opens (verification, calibration statistics, sensitivity
trials, reconstruction, the onnxruntime benchmark) comes from here, so that every onnxruntime
failure becomes a typed error whose one line names the model file and what failed:

- on the user's model, or one built from it (instrumented, probed): ``LoadError`` when
  onnxruntime cannot load or run it, ``UsageError`` when the inputs do not fit it;
- on the pruned model: ``VerificationFailed`` (nothing is written).

Models with OpenVINO's ``FakeQuantize`` (NNCF's int8 export), which onnxruntime has no kernel
for, run as their expansion into standard ops (see fake_quantize); ``ModelRunner.description``
says so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from .errors import LoadError, OnnxPruneError, UsageError, VerificationFailed, backend_import_error
from .fake_quantize import FQ_DOMAIN, expand_fake_quantize, has_fake_quantize

__all__ = ["EXPANDED", "ModelRunner", "describe", "onnxruntime_message", "paired_outputs", "run_model", "session"]

Feeds = Mapping[str, np.ndarray]


def _onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # onnxruntime is a dependency: not installed, broken, or Ctrl-C while it loaded
        raise backend_import_error(
            "onnxruntime",
            exc,
            "onnxruntime is not installed (pip install onnxruntime); it runs the models to verify and calibrate",
        ) from None
    return ort


class ModelRunner:
    """An onnxruntime session as a function of the feeds, with the model's input and output
    names; onnxruntime's errors come out typed (see the module doc)."""

    def __init__(self, sess: Any, source: str, what: str, pruned: bool) -> None:
        self._sess = sess
        self.source, self.what, self.pruned = source, what, pruned
        self.output_names = [o.name for o in sess.get_outputs()]
        self.description = describe()  # set by ``session``: which runtime, how configured
        self.expanded = False  # set by ``session``: FakeQuantize runs as its expansion
        self.workers = 1  # set by ``session(per_sample=True)``: samples run at once by ``run_each``

    @property
    def inference_session(self) -> Any:
        """The onnxruntime.InferenceSession itself, for code that hands it to a user."""
        return self._sess

    @property
    def input_shapes(self) -> dict[str, list[int | str | None]]:
        """Every input's declared shape (a dynamic dimension is its name, or None)."""
        return {i.name: list(i.shape) for i in self._sess.get_inputs()}

    def run(self, feeds: Feeds, names: Sequence[str] | None = None) -> list[np.ndarray]:
        """The outputs ``names`` (default: all) for one set of feeds."""
        try:
            return self._sess.run(None if names is None else list(names), dict(feeds))
        except MemoryError:
            raise
        except Exception as exc:
            raise self._run_error(feeds, exc) from None

    def __call__(self, feeds: Feeds) -> list[np.ndarray]:
        return self.run(feeds)

    def run_each(self, feeds_list: Sequence[Feeds], names: Sequence[str] | None = None) -> list[list[np.ndarray]]:
        """``run`` on every set of feeds, in order; a ``per_sample`` session runs up to
        ``workers`` of them at once (onnxruntime computes outside Python's lock)."""
        feeds_list = list(feeds_list)
        if self.workers < 2 or len(feeds_list) < 2:
            return [self.run(f, names) for f in feeds_list]
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(min(self.workers, len(feeds_list)))
        try:
            return list(pool.map(lambda f: self.run(f, names), feeds_list))
        finally:
            # On an error or Ctrl-C only the runs under way are waited for, not the queued ones.
            pool.shutdown(wait=True, cancel_futures=True)

    def outputs(self, feeds_list: Sequence[Feeds], batch_axes: Mapping[str, int] | None = None) -> list[np.ndarray]:
        """Every output over all the feeds, samples concatenated along the first axis (or the
        output's axis in ``batch_axes``: sequence-first outputs)."""
        per_feed = self.run_each(feeds_list)
        axes = batch_axes or {}
        return [
            np.concatenate([o[i] for o in per_feed], axis=axes.get(name, 0)) for i, name in enumerate(self.output_names)
        ]

    def _run_error(self, feeds: Feeds, exc: BaseException) -> OnnxPruneError:
        if self.pruned:
            return VerificationFailed(
                f"{self.source}: onnxruntime cannot run the pruned model: {onnxruntime_message(exc)}; nothing written"
            )
        problem = _feed_problem(self._sess.get_inputs(), feeds)
        if problem is not None:
            return UsageError(f"{self.source}: the inputs do not fit {self.what}: {problem}")
        return LoadError(f"{self.source}: onnxruntime cannot run {self.what}: {onnxruntime_message(exc)}")


def session(
    model: onnx.ModelProto | str,
    *,
    source: str = "<model>",
    what: str = "the model",
    pruned: bool = False,
    optimize: bool = False,
    threads: int | None = None,
    per_sample: bool = False,
) -> ModelRunner:
    """An onnxruntime session of ``model`` on the CPU. ``model`` may be the path of a saved
    model: onnxruntime then reads the file itself, and the model is not encoded again; models
    over 2 GB go through a temporary folder. Without ``optimize`` graph optimisations are off,
    so the graph itself is what runs (what verification must check). ``source`` (the model
    file) and ``what`` (which model derived from it) name it in errors; ``pruned`` makes
    failures a VerificationFailed. ``threads``: onnxruntime's intra-op threads (None: its choice).
    ``per_sample``: the session serves ``ModelRunner.run_each`` over many samples of the same
    shapes: each run computes on one thread and ``SAMPLE_WORKERS`` samples run at once (see
    SAMPLE_WORKERS for why); ``threads`` then is ignored."""
    ort = _onnxruntime()
    expanded = False
    if isinstance(model, onnx.ModelProto) and has_fake_quantize(model):
        model, expanded = expand_fake_quantize(model), True
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if per_sample:
        opts.intra_op_num_threads = 1
    elif threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 4  # its errors reach the user as ours, on one line: no log on stderr
    providers = ["CPUExecutionProvider"]
    try:
        if isinstance(model, str):
            try:
                sess = ort.InferenceSession(model, opts, providers=providers)
            except Exception as exc:  # onnxruntime's own error types (re-raised unless FakeQuantize)
                if FQ_DOMAIN not in str(exc):
                    raise
                # A saved model with OpenVINO's FakeQuantize (NNCF's export): run its expansion.
                sess = _session_of_proto(ort, expand_fake_quantize(onnx.load(model)), opts, providers)
                expanded = True
        else:
            sess = _session_of_proto(ort, model, opts, providers)
    except (MemoryError, OnnxPruneError):
        raise
    except Exception as exc:
        if pruned:
            raise VerificationFailed(
                f"{source}: onnxruntime cannot load the pruned model: {onnxruntime_message(exc)}; nothing written"
            ) from None
        raise LoadError(f"{source}: onnxruntime cannot load {what}: {onnxruntime_message(exc)}") from None
    runner = ModelRunner(sess, source, what, pruned)
    runner.description, runner.expanded = describe(optimize=optimize, expanded=expanded), expanded
    if per_sample:
        runner.workers = SAMPLE_WORKERS
    return runner


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Samples of a ``per_sample`` session run this many at once, each on one thread, instead of
# one after another on onnxruntime's intra-op threads: a sample's run (batch 1, the trials' and
# the refit's loops) has many small kernels whose threads wait on each other, and on a loaded
# machine they spin through their time slices (PicoDet, 4 samples at load 10: 1.6 s of CPU on
# the default 2 threads, 0.7 s on one; wall 4.6 s -> 2.8 s two at a time). Its results no longer
# depend on the machine's core count either (the default intra-op threads are its cores, and a
# vectorised kernel's split between threads can move its last bits). At most 8: each worker
# holds one sample's activations.
SAMPLE_WORKERS = max(1, min(8, _cpus()))


def describe(*, optimize: bool = False, expanded: bool = False) -> str:
    """What a session runs, as reports name the runtime that proved a result."""
    text = f"onnxruntime (CPU, f32, graph optimisations {'on' if optimize else 'off'})"
    if expanded:
        text += f", {EXPANDED}"
    return text


EXPANDED = f"OpenVINO FakeQuantize ({FQ_DOMAIN}) expanded to standard ops"


def _session_of_proto(ort: Any, model: onnx.ModelProto, opts: Any, providers: list[str]) -> Any:
    from .saving import save_model, serialize

    data = serialize(model)
    if data is not None:
        return ort.InferenceSession(data, opts, providers=providers)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # onnxruntime reads it with external data
        path = f"{tmp}/model.onnx"
        save_model(model, path, external_data=True)
        return ort.InferenceSession(path, opts, providers=providers)


def run_model(model: onnx.ModelProto | str, feeds: Feeds, *, source: str = "<model>") -> list[np.ndarray]:
    """Run ``model`` once (see ``session`` to run it on several feeds)."""
    return session(model, source=source)(feeds)


def paired_outputs(
    reference: onnx.ModelProto | str,
    candidate: onnx.ModelProto | str,
    feeds_list: Sequence[Feeds],
    *,
    source: str = "<model>",
) -> tuple[list[str], list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Output names, and per output the reference's and the candidate's (the pruned model's)
    arrays for every feed (each model in memory or the path of a saved one)."""
    run_ref, run_cand = session(reference, source=source), session(candidate, source=source, pruned=True)
    names = run_ref.output_names
    refs: list[list[np.ndarray]] = [[] for _ in names]
    gots: list[list[np.ndarray]] = [[] for _ in names]
    for feeds in feeds_list:
        for i, (r, g) in enumerate(zip(run_ref(feeds), run_cand(feeds))):
            refs[i].append(r)
            gots[i].append(g)
    return names, refs, gots


# onnxruntime's messages carry a status prefix, and for a failing kernel the C++ source location
# and the check that failed; the user needs the node and the reason.
_STATUS = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
_NODE = re.compile(r"Non-zero status code returned while running (\S+) node\. Name:'([^']*)' Status Message: ")
_LOCATION = re.compile(r"^\S+:\d+ [^(]*\([^)]*\)\s*(?:.*? was false\.\s*)?")


def onnxruntime_message(exc: BaseException) -> str:
    """onnxruntime's error text on one line: the failing node (if any) and the reason, without
    its status prefix and source location."""
    text = _STATUS.sub("", " ".join(str(exc).split()))
    node = _NODE.search(text)
    if node:
        reason = _LOCATION.sub("", text[node.end() :])
        text = f"{node.group(1)} node {node.group(2)!r}: {reason}"
    else:
        text = _LOCATION.sub("", text.split("Status Message: ")[-1])
    return text[:300]


_TYPES = {"float": "float32", "double": "float64"}


def _feed_problem(inputs: Sequence[Any], feeds: Feeds) -> str | None:
    """What is wrong with ``feeds`` for a session with these inputs (onnxruntime's NodeArg), or
    None if they fit (then the model itself failed)."""
    declared = {i.name: i for i in inputs}
    missing = [n for n in declared if n not in feeds]
    if missing:
        return f"no value for input(s) {missing} (given: {sorted(feeds)})"
    unknown = [n for n in feeds if n not in declared]
    if unknown:
        return f"{unknown} are not inputs of the model (its inputs: {sorted(declared)})"
    for name, arg in declared.items():
        value = np.asarray(feeds[name])
        kind = arg.type[len("tensor(") : -1] if arg.type.startswith("tensor(") else arg.type
        try:
            want = np.dtype(_TYPES.get(kind, kind))
        except TypeError:
            want = None
        if want is not None and value.dtype != want:
            return f"input {name!r} is {value.dtype}, the model takes {kind}"
        shape = list(arg.shape)
        fits = len(shape) == value.ndim and all(not isinstance(d, int) or d == v for d, v in zip(shape, value.shape))
        if not fits:
            takes = ", ".join(str(d) if isinstance(d, int) else "?" for d in shape)  # not 'DynamicDimension.0'
            return f"input {name!r} has shape {list(value.shape)}, the model takes [{takes}]"
    return None
