"""The latency table cache: one JSON file per model and deployment in the user's cache folder
(``$ONNXPRUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/onnxprune``, else ``~/.cache/onnxprune``;
tables under ``latency/``). A table is valid only where its key matches: the CPU, the runtime
and its version, precision, batch, threads, hint, the input shapes and the model file's bytes
(sha256), and the rules for custom ops when they are not the default ones (``rules_key``: they
decide the units). A cache hit reads no model and times nothing."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping, Sequence

from ..errors import UsageError
from .table import LatencySettings, LatencyTable

__all__ = [
    "METHOD",
    "cache_dir",
    "cache_path",
    "cpu_name",
    "file_sha256",
    "load_cached",
    "model_sha256",
    "rules_key",
    "store",
    "table_key",
]

# Bumped whenever the way tables are measured changes: older tables are then rebuilt.
METHOD = "subgraph/3"


def cache_dir(override: str | os.PathLike[str] | None = None) -> str:
    """The folder latency tables are cached in: ``latency/`` under ``override`` (the cache root
    a caller chose) or the root the module docstring says."""
    root = os.fspath(override) if override else os.environ.get("ONNXPRUNE_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "onnxprune")
    return os.path.join(root, "latency")


def cpu_name() -> str:
    """The CPU's model name, core count and a digest of its feature flags (two VMs that both
    call themselves 'AMD EPYC' may differ in AVX-512 or bf16 support)."""
    name, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key == "flags" and not flags:
                    flags = " ".join(sorted(value.split()))
    except OSError:  # not Linux: what the platform says
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    digest = hashlib.sha256(flags.encode()).hexdigest()[:8] if flags else "unknown"
    return f"{name} ({os.cpu_count()} cpus, flags {digest})"


def file_sha256(path: str) -> str:
    """The model file's sha256 (its bytes only: external-data files beside it are not read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_sha256(path: str, folder: str) -> str:
    """``file_sha256``, remembered in the cache folder by the file's path, size and
    modification time (hashing ResNet-50's 100 MB takes longer than the rest of a cache hit)."""
    st = os.stat(path)
    index_path = os.path.join(folder, "sha256.json")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        if not isinstance(index, dict):
            index = {}
    except (OSError, ValueError):
        index = {}
    where = os.path.abspath(path)
    entry = index.get(where)
    if isinstance(entry, list) and len(entry) == 3 and entry[:2] == [st.st_size, st.st_mtime_ns]:
        return str(entry[2])
    sha = file_sha256(path)
    index[where] = [st.st_size, st.st_mtime_ns, sha]
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = f"{index_path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(index, f)
        os.replace(tmp, index_path)
    except OSError:  # a read-only cache: hash every time
        pass
    return sha


def rules_key(registry: object) -> str | None:
    """What the rules a table was built with add to (or change in) the default ones, as a digest:
    per changed op, its rule's class and the sha256 of the file defining it (the rules decide the
    units: with rules for a custom op, channels it pinned become prunable). None for the default
    rules (None or a registry equal to ``default_registry()``), so that their tables keep their key."""
    if registry is None:
        return None
    import inspect

    from ..rules import default_registry

    def entries(reg: object) -> dict[tuple[str, str], list[tuple[int, int, type, str]]]:
        return {k: [(lo, hi, type(r), _state(r)) for lo, hi, r in v] for k, v in getattr(reg, "_rules", {}).items()}

    mine, default = entries(registry), entries(default_registry())
    changed = []
    for op in sorted(set(mine) | set(default)):
        if mine.get(op) == default.get(op):
            continue
        for lo, hi, cls, state in mine.get(op, []):
            try:
                source = inspect.getsourcefile(cls)
                digest = file_sha256(source) if source else ""
            except (TypeError, OSError):  # a class made at run time: its name alone
                digest = ""
            changed.append([*op, lo, hi, cls.__qualname__, digest, state])
        if op not in mine:
            changed.append([*op, "removed"])
    if not changed:
        return None
    return hashlib.sha256(json.dumps(changed).encode()).hexdigest()[:16]


def _state(rule: object) -> str:
    """A rule object's own attributes (its constructor's arguments), as stable text: two objects
    of one class with other arguments are other rules (they shared a table before). Functions
    and classes by their qualified name, arrays by their bytes' digest, anything else by its
    repr with memory addresses dropped."""
    import re

    def plain(value: object) -> object:
        if callable(value) and hasattr(value, "__qualname__"):
            return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
        if hasattr(value, "tobytes") and hasattr(value, "dtype"):
            return f"{value.dtype}{getattr(value, 'shape', '')}:{hashlib.sha256(value.tobytes()).hexdigest()[:16]}"
        return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))

    attrs = dict(getattr(rule, "__dict__", {}))
    for slot in getattr(type(rule), "__slots__", ()):
        if hasattr(rule, slot):
            attrs[slot] = getattr(rule, slot)
    try:
        return json.dumps(attrs, sort_keys=True, default=plain)
    except (TypeError, ValueError):  # keys that are not strings, a cycle: the text of each item
        return json.dumps(sorted((str(k), str(plain(v))) for k, v in attrs.items()))


def table_key(
    model_sha256: str,
    settings: LatencySettings,
    runtime: str,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    criterion: str = "l2",
    registry: object = None,
) -> dict[str, str]:
    """Everything a table's numbers depend on, as strings (``registry``: the rules it is built
    with; see ``rules_key``)."""
    shapes = ";".join(f"{k}:{','.join(str(d) for d in v)}" for k, v in sorted((input_shapes or {}).items()))
    rules = rules_key(registry)
    return {
        "cpu": cpu_name(),
        "runtime": runtime,
        "backend": settings.backend,
        "device": settings.device,
        "precision": settings.precision,
        "batch": str(settings.batch),
        "threads": "auto" if settings.threads is None else str(settings.threads),
        "hint": settings.hint,
        "input_shapes": shapes or "model's",
        "criterion": criterion,
        "method": METHOD,
        "model_sha256": model_sha256,
        **({"rules": rules} if rules else {}),
    }


def cache_path(key: Mapping[str, str], folder: str) -> str:
    digest = hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(folder, f"{key['model_sha256'][:16]}-{digest}.json")


def load_cached(key: Mapping[str, str], folder: str) -> tuple[LatencyTable | None, str | None]:
    """The cached table for ``key`` (None if there is none), and a note when a file was there
    but unusable (corrupt, or made for another key): it is then rebuilt and replaced."""
    path = cache_path(key, folder)
    if not os.path.isfile(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            table = LatencyTable.from_dict(json.load(f))
    except (OSError, ValueError, UsageError) as exc:
        return None, f"cached latency table {path} unreadable ({type(exc).__name__}); rebuilt"
    if dict(table.key) != dict(key):
        return None, f"cached latency table {path} was made for another key; rebuilt"
    return table, None


def store(table: LatencyTable, folder: str) -> str:
    """Write the table into the cache atomically (temporary file, then renamed); its path."""
    os.makedirs(folder, exist_ok=True)
    path = cache_path(table.key, folder)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(table.to_dict(), f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
