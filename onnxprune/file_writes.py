"""Writing files so that no half-written one is ever left and nothing is lost: single files
written beside their destination and renamed, several files replaced together or not at all,
and the checks that refuse an output before any work is done. (Models and the outputs of a
run: saving.)"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .errors import InterruptedAfterWriting, LeftoverWarning, UsageError, WriteError

__all__ = [
    "Replacement",
    "check_data_file",
    "check_output_folder",
    "check_writable",
    "holding_interrupts",
    "output_target",
    "own_prefix",
    "recover_leftovers",
    "removing_leftovers",
    "replace_together",
    "staging_name",
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


@contextmanager
def holding_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) while files are replaced: a KeyboardInterrupt between two renames,
    or while the previous files' copies are taken or removed, left a replacement half done
    (copies beside the files for the next run to sort out) and said 'interrupted' of a run
    whose files were in place. Held, it is raised when the block ends: as
    InterruptedAfterWriting when the block completed (the files are written), not at all when
    the block failed (its error says what happened). Only in the main thread while Python's
    own handler is installed: an application's handler is left alone."""
    import signal
    import threading

    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise InterruptedAfterWriting("interrupted after the files were written")


def _name_max(folder: str) -> int:
    """The longest file name (bytes) the file system of ``folder`` takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not POSIX, or not known: the common limit
        return 255


def staging_name(folder: str, prefix: str, name: str) -> str:
    """``prefix + name`` in ``folder``, the name shortened from its start (its end, the
    extension matplotlib and OpenVINO read, kept) to what the file system takes: a
    destination of 240 bytes is valid, its staging name with the prefix was not ('File name
    too long' after all the work)."""
    room = _name_max(folder) - len(prefix.encode())
    encoded = name.encode()
    if len(encoded) > room:
        name = encoded[len(encoded) - room :].decode("utf-8", "ignore")
    return os.path.join(folder, prefix + name)


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
    near = staging_name(folder, own_prefix(folder) + "copy-", base)
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
    kept (see output_target).

    ``keep`` takes every copy before the first move, so a process killed half way leaves a
    state the next run can read (recover_leftovers): while some kept copy is still the file at
    its destination (or a destination is missing) the change did not complete; once every
    destination differs from its copy, every move was made."""

    def __init__(self) -> None:
        self._done: list[tuple[str, str | None]] = []  # (destination, its previous file kept)
        self._kept: dict[str, tuple[str, bool]] = {}  # destination -> (copy, hard link?) not moved over yet

    def keep(self, destinations: Sequence[str]) -> None:
        """Keep a copy of each existing destination now, before any move; an OSError is a
        WriteError naming the destination, with every copy taken so far given up. Copies a
        killed run left beside them are dealt with first (recover_leftovers; a LeftoverWarning
        says what was done)."""
        import warnings

        for sentence in recover_leftovers(destinations):
            warnings.warn(sentence, LeftoverWarning, stacklevel=2)
        for destination in destinations:
            target = output_target(destination)
            if target in self._kept or not (os.path.islink(target) or os.path.isfile(target)):
                continue
            try:
                self._kept[target] = self._keep(target)
            except OSError as exc:
                self._release()
                raise WriteError(destination, exc) from None

    def move(self, staged: str, destination: str, name: str | None = None) -> None:
        """``os.replace(staged, destination)``, keeping what stood there; an OSError is a
        WriteError naming ``name`` (default: the destination), with nothing changed by this move."""
        target = output_target(destination)
        kept, linked = self._kept.pop(target, (None, False))
        try:
            if kept is None and (os.path.islink(target) or os.path.isfile(target)):  # a folder: os.replace refuses it
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
            kept = staging_name(folder, f"{own_prefix(folder)}kept{n}-", base)  # a long name: its end
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

    def _release(self) -> None:
        """Give up the copies of destinations not moved over: remove the links, rename back the rest."""
        for target, (kept, linked) in self._kept.items():
            if linked:
                with contextlib.suppress(OSError):
                    os.remove(kept)
            else:
                self._put_back(target, kept)
        self._kept = {}

    def undo(self) -> None:
        """Put back every file replaced so far and remove the files moved where none stood."""
        for destination, kept in reversed(self._done):
            if kept is not None:
                self._put_back(destination, kept)
            else:
                with contextlib.suppress(OSError):
                    os.remove(destination)
        self._done = []
        self._release()

    def finish(self) -> None:
        """Keep the change: remove the previous files' copies."""
        for _, kept in self._done:
            if kept is not None:
                with contextlib.suppress(OSError):
                    os.remove(kept)
        self._done = []
        self._release()


def _tag(folder: str, pid: int) -> str:
    """What proves a hidden name in ``folder`` is one process ``pid`` of onnxprune made there: a
    digest of the folder's identity (device and inode) and the PID. A file of yours merely
    named like a killed run's leftovers (``.onnxprune-4242-0-notes.txt``) does not carry it, and
    is never removed or moved."""
    import hashlib

    try:
        st = os.stat(folder)
        where = f"{st.st_dev}:{st.st_ino}"
    except OSError:
        where = os.path.abspath(folder)
    return hashlib.blake2b(f"onnxprune-staging\0{where}\0{pid}".encode(), digest_size=6).hexdigest()


def own_prefix(folder: str, pid: int | None = None) -> str:
    """``.onnxprune-PID-TAG-``: how every hidden name process ``pid`` (default: this one) stages
    or keeps in ``folder`` starts (see _tag); recover_leftovers deals only with names that carry
    their folder's and PID's tag."""
    pid = os.getpid() if pid is None else pid
    return f".onnxprune-{pid}-{_tag(folder, pid)}-"


_KEPT = re.compile(r"^\.onnxprune-(\d+)-([0-9a-f]{12})-kept\d+-(.+)$")
# What a run stages (saving.Outputs.staging_path, StagedModel's folder, _replace's copy): of a
# stopped process, never anyone's file (its tag says so).
_STAGED = re.compile(r"^\.onnxprune-(\d+)-([0-9a-f]{12})-(?:\d+|staged|copy)-.+$")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` may still be running (when in doubt: yes, and its files are left alone)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def recover_leftovers(destinations: Sequence[str]) -> list[str]:
    """Deal with the previous files a killed run kept beside ``destinations``
    (``.onnxprune-PID-TAG-keptN-NAME``, see Replacement) and say what was done, one sentence each.
    What a stopped process was staging there (never a file of its own) is removed. Only names
    whose TAG proves them this folder's and that PID's (own_prefix) are touched: a file merely
    named like one is left alone.

    The copies of one process (in the destinations' folders) whose process is gone, one of
    them kept for one of ``destinations``, are one change. Complete (every destination differs
    from its copy: every move was made, the run was stopped before removing the copies): the
    copies are removed. Not complete (some copy is still the file at its destination, or a
    destination is missing): every replaced or missing file is put back from its copy and the
    other copies removed, as the run's own undo would have. Copies of a live process (or one
    this cannot tell) are left alone."""
    targets = {os.path.abspath(output_target(d)) for d in destinations}
    groups: dict[int, list[tuple[str, str]]] = {}  # pid -> [(copy, destination)]
    said = []
    for folder in sorted({os.path.dirname(t) for t in targets}):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            m = _KEPT.match(name)
            if m and m[2] == _tag(folder, int(m[1])) and not _alive(int(m[1])):
                destination = os.path.join(folder, m[3])
                if destination not in targets:  # a long name's copy keeps its end (staging_name)
                    longer = [t for t in targets if os.path.dirname(t) == folder and t.endswith(m[3])]
                    destination = longer[0] if len(longer) == 1 else destination
                groups.setdefault(int(m[1]), []).append((os.path.join(folder, name), destination))
            m = _STAGED.match(name)
            if m and m[2] == _tag(folder, int(m[1])) and not _alive(int(m[1])):
                path = os.path.join(folder, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.remove(path)
                if not os.path.lexists(path):
                    said.append(f"{path}: removed, a file process {m[1]} was staging when it was stopped")
    for pid, pairs in sorted(groups.items()):
        if not any(d in targets for _, d in pairs):
            continue
        states = [_state(k, d) for k, d in pairs]
        complete = all(s == "replaced" for s in states)
        for (kept, destination), state in zip(pairs, states):
            try:
                if complete:
                    os.remove(kept)
                    said.append(
                        f"{destination}: removed {os.path.basename(kept)}, its previous version, left by process {pid}, "
                        "which was stopped after it had replaced all its files"
                    )
                elif state == "same":
                    os.remove(kept)
                    said.append(
                        f"{destination}: removed {os.path.basename(kept)}, a second name of it left by process {pid}, "
                        "which was stopped before replacing it (the file is as it was)"
                    )
                else:
                    os.replace(kept, destination)
                    why = "the file was missing" if state == "missing" else "not all its files were replaced"
                    said.append(
                        f"{destination}: put back its previous version from {os.path.basename(kept)}: process {pid} "
                        f"was stopped half way through replacing its files ({why}; all or none)"
                    )
            except OSError as exc:
                said.append(
                    f"{destination}: could not deal with {os.path.basename(kept)}, left by process {pid} "
                    f"({exc.strerror or exc}); left as it is"
                )
    return said


def _state(kept: str, destination: str) -> str:
    """'missing' (no file at ``destination``), 'same' (``kept`` is another name of it: not
    replaced yet) or 'replaced'."""
    if not os.path.lexists(destination):
        return "missing"
    try:
        return "same" if os.path.samefile(kept, destination) else "replaced"
    except OSError:
        return "replaced"


def replace_together(moves: Sequence[tuple[str, str]]) -> None:
    """Move each ``(staged, destination)`` in order, all or none (see Replacement); an OSError
    is a WriteError naming the destination that failed."""
    replacement = Replacement()
    with holding_interrupts():
        try:
            replacement.keep([destination for _, destination in moves])
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
    tmp = staging_name(os.path.dirname(os.path.abspath(target)), "", f"{os.path.basename(target)}.tmp{os.getpid()}")
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
    if not path:  # an unset shell variable: the folder it is in would have been taken
        raise UsageError(f"an empty file name as {what}; give a file name")
    if path.endswith(("/", os.sep)):  # a folder, existing or not: the rename would fail after the work
        raise UsageError(f"{path}: {what} ends in '/', a folder; give a file name")
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
    if os.path.isdir(folder):
        name, limit = os.path.basename(output_target(path)), _name_max(folder)
        if len(name.encode()) > limit:  # refused now, not by the rename after the work
            raise UsageError(
                f"{path}: {what} file name is {len(name.encode())} bytes long; this file system takes {limit}"
            )
    if not os.path.isdir(folder):
        if os.path.exists(folder):  # -o m.onnx/x.onnx: m.onnx is there, as a file
            raise UsageError(f"{path}: {what} folder {folder} is a file, not a folder")
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
