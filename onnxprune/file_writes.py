"""Writing files so that no half-written one is ever left and nothing is lost: single files
written beside their destination and renamed, several files replaced together or not at all,
and the checks that refuse an output before any work is done. (Models and the outputs of a
run: saving.)"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .errors import UsageError, WriteError

__all__ = [
    "Replacement",
    "check_data_file",
    "check_output_folder",
    "check_writable",
    "output_target",
    "removing_leftovers",
    "replace_together",
    "write_atomic",
]


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


def output_target(path: str) -> str:
    """The file a write to ``path`` replaces: ``path`` itself, or, when it is a symbolic link,
    the file the link leads to (every hop followed), as cp and editors write: the link stays
    a link and its target gets the new content. (check_output_folder refused a dangling link
    and a link through /proc or /dev before any work.)"""
    if not os.path.islink(path):
        return path
    return os.path.realpath(path)


def _replace(staged: str, target: str) -> None:
    """``os.replace(staged, target)``; when ``staged`` is on another file system (staged beside
    a link whose target is elsewhere) it is copied beside ``target`` first, then renamed."""
    try:
        os.replace(staged, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    folder, base = os.path.split(target)
    near = os.path.join(folder, f".onnxprune-{os.getpid()}-copy-{base}")
    with removing_leftovers(near):
        shutil.copyfile(staged, near)
        os.replace(near, target)
    with contextlib.suppress(OSError):
        os.remove(staged)


class Replacement:
    """Staged files moved over their destinations as one change. A destination that already
    exists is kept under a hidden name beside it (a hard link, so it never goes missing; a
    rename where links are refused) until ``finish`` removes the copies; ``undo`` puts back
    every file this replaced and removes the ones it created: a failure half way through a
    model and its data file (or an IR's .xml and .bin, or a run's outputs) loses nothing. A
    destination that is a symbolic link is written through: its target is replaced, the link
    kept (see output_target)."""

    def __init__(self) -> None:
        self._done: list[tuple[str, str | None]] = []  # (destination, its previous file kept)

    def move(self, staged: str, destination: str, name: str | None = None) -> None:
        """``os.replace(staged, destination)``, keeping what stood there; an OSError is a
        WriteError naming ``name`` (default: the destination), with nothing changed by this move."""
        kept, linked = None, False
        target = output_target(destination)
        try:
            if os.path.islink(target) or os.path.isfile(target):  # a folder: os.replace refuses it
                kept, linked = self._keep(target)
            _replace(staged, target)
        except OSError as exc:
            if kept is not None:
                if linked:  # the destination never moved; renaming a link over it would do nothing
                    with contextlib.suppress(OSError):
                        os.remove(kept)
                else:
                    self._put_back(target, kept)
            raise WriteError(name or destination, exc) from None
        self._done.append((target, kept))

    @staticmethod
    def _keep(destination: str) -> tuple[str, bool]:
        """A copy of ``destination`` under a free hidden name beside it, and whether it is a
        hard link (else ``destination`` was renamed to it)."""
        folder, base = os.path.split(os.path.abspath(destination))
        for n in range(1000):
            kept = os.path.join(folder, f".onnxprune-{os.getpid()}-kept{n}-{base}")
            if not os.path.lexists(kept):
                break
        try:
            os.link(destination, kept, follow_symlinks=False)
        except OSError:  # a file system without hard links
            os.replace(destination, kept)
            return kept, False
        return kept, True

    @staticmethod
    def _put_back(destination: str, kept: str) -> None:
        """Restore ``kept`` at ``destination``; if even that fails the copy stays where it is."""
        with contextlib.suppress(OSError):
            os.replace(kept, destination)

    def undo(self) -> None:
        """Put back every file replaced so far and remove the files moved where none stood."""
        for destination, kept in reversed(self._done):
            if kept is not None:
                self._put_back(destination, kept)
            else:
                with contextlib.suppress(OSError):
                    os.remove(destination)
        self._done = []

    def finish(self) -> None:
        """Keep the change: remove the previous files' copies."""
        for _, kept in self._done:
            if kept is not None:
                with contextlib.suppress(OSError):
                    os.remove(kept)
        self._done = []


def replace_together(moves: Sequence[tuple[str, str]]) -> None:
    """Move each ``(staged, destination)`` in order, all or none (see Replacement); an OSError
    is a WriteError naming the destination that failed."""
    replacement = Replacement()
    try:
        for staged, destination in moves:
            replacement.move(staged, destination)
    except BaseException:
        replacement.undo()
        raise
    replacement.finish()


def write_atomic(path: str, data: bytes | str) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename: never a half-written
    file. (Models are written by DeferredModel.save, through a staging folder.)"""
    check_output_folder(path)
    target = output_target(path)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        with removing_leftovers(tmp):
            with open(tmp, "w" if isinstance(data, str) else "wb") as f:
                f.write(data)
            os.replace(tmp, target)
    except OSError as exc:  # a full disk: named by the destination, not the temporary file
        raise WriteError(path, exc) from None


def _process_file(path: str) -> str | None:
    """The first hop under /proc or /dev (not /dev/shm) of the symbolic links ``path`` leads
    through, else None. /dev/stdout -> /proc/self/fd/1 resolves to whatever stdout is (a regular
    file when redirected), but renaming onto it replaces the link itself."""
    hop, seen = path, 0
    while os.path.islink(hop) and seen < 40:
        hop = os.path.join(os.path.dirname(os.path.abspath(hop)), os.readlink(hop))
        seen += 1
        if hop.startswith("/proc/") or (hop.startswith("/dev/") and not hop.startswith("/dev/shm/")):
            return hop
    return None


def check_output_folder(path: str, what: str = "output") -> None:
    """Refuse an output that names a folder or whose folder does not exist (a usage error,
    before any work). A symbolic link is written through (output_target): one that leads
    through /proc or /dev, or to no file (dangling), is refused."""
    linked = _process_file(path)
    if linked is not None:
        raise UsageError(
            f"{path}: {what} leads to {linked} (a process's file, not a file of its own); give a file name"
        )
    if os.path.islink(path) and not os.path.exists(path):
        raise UsageError(
            f"{path}: {what} is a symbolic link to {os.readlink(path)}, which does not exist "
            "(a write goes through a link to its file); create that file or give another file name"
        )
    if os.path.isdir(path):
        raise UsageError(f"{path}: {what} is a folder; give a file name")
    if os.path.exists(path) and not os.path.isfile(path):  # a device or fifo: a rename would replace it
        raise UsageError(f"{path}: {what} is not a regular file; give a file name")
    folder = os.path.dirname(os.path.abspath(output_target(path)))
    if not os.path.isdir(folder):
        raise UsageError(f"{path}: {what} folder {folder} does not exist")


def check_data_file(path: str, what: str = "the model's external data") -> None:
    """Refuse a model's external data file ``path`` that is a symbolic link: written through,
    the model would not load (onnx refuses external data behind a link)."""
    if os.path.islink(path):
        raise UsageError(
            f"{path}: {what} would be written through a symbolic link (to {os.readlink(path)}), and onnx "
            "refuses to read external data through a link; remove the link or give another file name"
        )


def check_writable(path: str, what: str = "output") -> None:
    """``check_output_folder``, and a probe file created and removed in the folder: a folder
    it may not write (or a read-only file system) is a usage error before anything is written."""
    import tempfile

    check_output_folder(path, what)
    folder = os.path.dirname(os.path.abspath(output_target(path)))
    try:
        fd, probe = tempfile.mkstemp(prefix=".onnxprune-probe-", dir=folder)
    except OSError as exc:
        raise UsageError(
            f"{path}: cannot write {what} into {folder} ({exc.strerror or exc}); nothing written"
        ) from None
    os.close(fd)
    os.remove(probe)
