"""Writing files so that no half-written one is ever left: single files written beside their
destination and renamed, and the checks that refuse an output before any work is done.
(Models and the outputs of a run: saving.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import UsageError, WriteError

__all__ = ["check_output_folder", "check_writable", "removing_leftovers", "write_atomic"]


@contextmanager
def removing_leftovers(*paths: str) -> Iterator[None]:
    """Remove whichever of the temporary files ``paths`` still exist on the way out: a failure
    before their rename leaves nothing behind."""
    try:
        yield
    finally:
        for p in paths:
            if os.path.exists(p):
                os.remove(p)


def write_atomic(path: str, data: bytes | str) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename: never a half-written
    file. (Models are written by DeferredModel.save, through a staging folder.)"""
    check_output_folder(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with removing_leftovers(tmp):
            with open(tmp, "w" if isinstance(data, str) else "wb") as f:
                f.write(data)
            os.replace(tmp, path)
    except OSError as exc:  # a full disk: named by the destination, not the temporary file
        raise WriteError(path, exc) from None


def check_output_folder(path: str, what: str = "output") -> None:
    """Refuse an output that names a folder or whose folder does not exist (a usage error,
    before any work)."""
    if os.path.isdir(path):
        raise UsageError(f"{path}: {what} is a folder; give a file name")
    if os.path.exists(path) and not os.path.isfile(path):  # a device or fifo: a rename would replace it
        raise UsageError(f"{path}: {what} is not a regular file; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{path}: {what} folder {folder} does not exist")


def check_writable(path: str, what: str = "output") -> None:
    """``check_output_folder``, and a probe file created and removed in the folder: a folder
    it may not write (or a read-only file system) is a usage error before anything is written."""
    import tempfile

    check_output_folder(path, what)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, probe = tempfile.mkstemp(prefix=".onnxprune-probe-", dir=folder)
    except OSError as exc:
        raise UsageError(
            f"{path}: cannot write {what} into {folder} ({exc.strerror or exc}); nothing written"
        ) from None
    os.close(fd)
    os.remove(probe)
