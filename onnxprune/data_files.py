"""External data files beside a model output: the replaced model's own ``OUT.onnx.data``, removed
with it, and an earlier model's, only reported (another model may read it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import onnx

# A model file bigger than this is not parsed to learn which external data it reads (a model
# with its weights apart is small): it may read any, so a data file beside it is kept.
_SCAN_LIMIT = 64 * 2**20


def _reads_data(model: str, name: str) -> bool | None:
    """Whether the model file ``model`` reads external data from ``name`` (in its folder); None
    when that cannot be told cheaply (not a model onnx reads, or bigger than _SCAN_LIMIT)."""
    try:
        if os.path.getsize(model) > _SCAN_LIMIT:
            return None
        proto = onnx.load(model, load_external_data=False)
    except Exception:
        return None
    return _reads_location(proto, name)


def _reads_location(proto: onnx.ModelProto, name: str) -> bool:
    """Whether a tensor of ``proto`` keeps its data in the file ``name`` (its folder's)."""
    return any(
        onnx.external_data_helper.uses_external_data(t)
        and any(e.key == "location" and os.path.normpath(e.value) == name for e in t.external_data)
        for t in onnx.external_data_helper._get_all_tensors(proto)
    )


def replaced_data_file(destination: str, files: Sequence[str]) -> tuple[str, int] | None:
    """``DESTINATION.data`` (and its inode) when a model written as one file (``files``: the
    names it writes) replaces the model that read its weights from it and no other model in
    the folder reads it: the data goes with the model it belonged to, once the new files are
    in place (it was left, the size of the weights, with a warning). None otherwise: a data
    file the replaced model did not read, or that another model there may read, stays."""
    data = destination + ".data"
    if len(files) != 1 or not os.path.isfile(data) or os.path.islink(data):
        return None
    name = os.path.basename(data)
    if _reads_data(destination, name) is not True:
        return None
    folder = os.path.dirname(os.path.abspath(destination))
    mine = {os.path.abspath(destination), os.path.realpath(destination)}
    try:
        others = [os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(".onnx")]
        inode = os.stat(data).st_ino
    except OSError:
        return None
    for other in others:
        if os.path.basename(other).startswith(".onnxprune-") or other in mine or os.path.realpath(other) in mine:
            continue
        if os.path.isfile(other) and _reads_data(other, name) is not False:
            return None
    return data, inode


def remove_replaced_data(found: tuple[str, int] | None) -> None:
    """Remove the data file replaced_data_file found, if it is still that file."""
    if found is None:
        return
    data, inode = found
    with contextlib.suppress(OSError):
        if os.stat(data).st_ino == inode and not os.path.islink(data):
            os.remove(data)


def unused_data_file(path: str) -> str | None:
    """A sentence when ``PATH.data`` (the name ``--external-data`` gives the weights) stands
    beside the model ``path`` and the model does not read it: left from an earlier model
    written there with its weights apart. None when there is none, or the model uses it. The
    file is not removed: another model may use it (the replaced model's own data file is
    removed as the model is written: replaced_data_file)."""
    data = path + ".data"
    if not os.path.isfile(data):
        return None
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception:  # not a model we can read: nothing to say
        return None
    if _reads_location(proto, os.path.basename(data)):
        return None
    return (
        f"{data}: not used by {path} (written as one file): left from an earlier model; "
        "remove it unless another model uses it"
    )
