"""Writing models: atomically, with external data past the protobuf limit, and with big new
weights written straight from their arrays.

On a model of hundreds of MB every copy of the weights costs about as much as loading it, and
the path from a sliced array to a file has three: ``ndarray.tobytes``, the assignment into the
TensorProto, and the encoding of the model. A ``DeferredModel`` keeps the surgery's big new
weights as arrays, present in the model only as hollow tensors (name, type, shape), and writes
their bytes from the arrays into the file; it fills the tensors only when someone asks for the
model itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from .data_files import remove_replaced_data, replaced_data_file, unused_data_file
from .errors import UsageError, WriteError
from .file_writes import (
    Replacement,
    check_data_file,
    check_output_folder,
    check_writable,
    holding_interrupts,
    output_target,
    own_prefix,
    removing_leftovers,
    staging_name,
    write_atomic,
)
from .wire import GRAPH_FIELD, INITIALIZER_FIELD, RAW_DATA_FIELD, RAW_DTYPES, encode_varint, field_key

__all__ = [
    "PROTOBUF_LIMIT",
    "DeferredModel",
    "Outputs",
    "StagedModel",
    "check_output_folder",
    "check_writable",
    "copy_fields",
    "removing_leftovers",
    "save_model",
    "serialize",
    "serialized_size",
    "unused_data_file",
    "write_atomic",
]

PROTOBUF_LIMIT = 2**31 - 2**26  # a serialised ModelProto must stay below 2 GB; keep headroom

Chunk = bytes | memoryview


def _size(chunks: Sequence[Chunk]) -> int:
    return sum(len(c) if isinstance(c, bytes) else c.nbytes for c in chunks)


def serialized_size(model: onnx.ModelProto) -> int:
    """Bytes the model takes serialised; past the 2 GB protobuf limit (where protobuf refuses
    to compute it) the sum of its initializers' sizes, which is at least that much.

    upb computes the size by encoding the model: callers that also write it should take the
    length of what they write instead."""
    try:
        size = model.ByteSize()
    except Exception:  # EncodeError: over 2 GB
        return sum(t.ByteSize() for t in model.graph.initializer)
    return size + 2**32 if size < 0 else size


def serialize(model: onnx.ModelProto) -> bytes | None:
    """The serialised model, or None when protobuf cannot encode it in one piece (over 2 GB).

    Encoded once: asking for the size first would encode it twice."""
    try:
        data = model.SerializeToString()
    except Exception:  # protobuf's EncodeError and ValueError, depending on the backend
        return None
    return data if len(data) <= PROTOBUF_LIMIT else None


def save_model(model: onnx.ModelProto, path: str, external_data: bool | None = None) -> int:
    """Write ``model`` to ``path`` safely: into a temporary file (or files) beside it, then
    renamed, so a failure never leaves a half-written model. With external data (forced, or
    automatic above the protobuf limit) the weights go to ``<name>.data`` beside the model.
    Returns the bytes written (model and data file)."""
    return DeferredModel(model).save(path, external_data)


class Outputs:
    """The files of one run, staged beside their destinations and moved into place together
    by ``commit``: all of them or none. Leaving the ``with`` block without committing removes
    whatever was staged. Errors name the user's paths, never a staging path."""

    def __init__(self, one_file: Mapping[str, str] | None = None) -> None:
        self._moves: list[tuple[str, str]] = []  # (staged file, destination), in commit order
        self._models: list[StagedModel] = []
        # destination -> how it is shown: a model that must be one file (``-o -``: stdout takes one)
        self._one_file = dict(one_file or {})

    def staging_path(self, path: str) -> str:
        """A temporary name beside ``path`` (beside its target when it is a symbolic link: one
        rename replaces it) that keeps its extension (matplotlib, OpenVINO read it)."""
        folder = os.path.dirname(os.path.abspath(output_target(path)))
        return staging_name(folder, f"{own_prefix(folder)}{len(self._moves)}-", os.path.basename(path))

    def add(self, staged: str, destination: str) -> None:
        """Move file ``staged`` to ``destination`` on commit."""
        self._moves.append((staged, destination))

    def add_text(self, path: str, text: str | bytes) -> None:
        """Stage ``text`` for ``path``; an OSError while writing (a full disk) is a WriteError
        naming ``path``, not the staging file."""
        tmp = self.staging_path(path)
        self.add(tmp, path)
        try:
            with open(tmp, "w" if isinstance(text, str) else "wb") as f:
                f.write(text)
        except OSError as exc:
            raise WriteError(path, exc) from None

    def add_written(self, path: str, write: Callable[[str], None]) -> None:
        """Stage the file ``write`` writes (given the staging path: a plot) for ``path``; an
        OSError while writing names ``path``, not the staging file."""
        staged = self.staging_path(path)
        self.add(staged, path)
        try:
            write(staged)
        except OSError as exc:
            raise WriteError(path, exc) from None

    def add_model(self, staged: StagedModel) -> None:
        """Take over ``staged``: its ``with`` block no longer removes it, this commits or discards it."""
        staged.owned = False
        self._models.append(staged)

    def model_path(self, destination: str) -> str:
        """Where the model for ``destination`` is staged (to be read before the commit)."""
        for model in self._models:
            if os.path.abspath(model.destination) == os.path.abspath(destination):
                return model.path
        raise KeyError(destination)

    def commit(self) -> None:
        """Move every staged file into place; if one move fails, every file is put back as it
        was (those it replaced restored, those it created removed) and the WriteError names
        that file's destination."""
        for model in self._models:
            shown = self._one_file.get(model.destination)
            if shown is not None and len(model.file_names) > 1:
                self.discard()
                raise UsageError(
                    f"{shown}: the model needs external data (past the 2 GB protobuf limit: a model file and its "
                    ".data), and stdout takes one file: give -o OUT.onnx; nothing written"
                )
        replaced = [replaced_data_file(m.destination, m.file_names) for m in self._models]
        replacement = Replacement()
        with holding_interrupts():  # a Ctrl-C waits until every file is in place (or put back)
            try:
                replacement.keep([*(d for m in self._models for d in m.destinations), *(d for _, d in self._moves)])
                for model in self._models:
                    model.commit(replacement)
                for staged, destination in self._moves:
                    replacement.move(staged, destination)
            except BaseException:
                replacement.undo()
                raise
            else:
                replacement.finish()
                for found in replaced:
                    remove_replaced_data(found)
            finally:
                self.discard()

    def discard(self) -> None:
        for model in self._models:
            model.discard()
        for staged, _ in self._moves:
            with contextlib.suppress(OSError):
                os.remove(staged)
        self._models, self._moves = [], []

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def copy_fields(target: object, source: object, exclude: tuple[str, ...] = ()) -> None:
    """Copy every set field of protobuf message ``source`` into ``target`` but ``exclude``."""
    for fd, value in source.ListFields():  # type: ignore[attr-defined]
        if fd.name in exclude:
            continue
        # protobuf 6 dropped FieldDescriptor.label for is_repeated
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        if repeated:
            getattr(target, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(target, fd.name).CopyFrom(value)
        else:
            setattr(target, fd.name, value)


@dataclass(eq=False)
class DeferredModel:
    """A model whose last initializers are hollow (name, type and shape, no data) while their
    values wait as arrays in ``arrays``; ``complete()`` fills them, ``save()`` writes them from
    the arrays without filling them."""

    proto: onnx.ModelProto
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @staticmethod
    def add_hollow(graph: onnx.GraphProto, arrays: dict[str, np.ndarray], name: str, values: np.ndarray) -> None:
        """Append a hollow initializer for ``values`` (a plain little-endian numeric array)."""
        t = graph.initializer.add()
        t.name = name
        t.data_type = onnx.helper.np_dtype_to_tensor_dtype(values.dtype)
        t.dims.extend(values.shape)
        arrays[name] = np.ascontiguousarray(values)

    def complete(self) -> onnx.ModelProto:
        """The model with every hollow initializer filled (done once)."""
        if self.arrays:
            for t in self.proto.graph.initializer:
                values = self.arrays.pop(t.name, None)
                if values is not None:
                    t.raw_data = values.tobytes()
        return self.proto

    def encode(self) -> list[Chunk] | None:
        """The serialised model as chunks, the hollow tensors' bytes taken from their arrays;
        None past the protobuf limit. Protobuf readers take the graph's fields in any order,
        so the hollow initializers are encoded after the rest of the graph."""
        g = self.proto.graph
        count = len(self.arrays)
        hollow = list(g.initializer[len(g.initializer) - count :]) if count else []
        if [t.name for t in hollow] != list(self.arrays):
            raise AssertionError("internal: hollow initializers must be the last ones, in order")
        metas = [t.SerializeToString() for t in hollow]
        for _ in range(count):  # set them aside while the rest of the graph is encoded
            del g.initializer[len(g.initializer) - 1]
        try:
            graph_bytes = g.SerializeToString()
        except Exception:  # EncodeError past 2 GB
            return None
        finally:
            for meta in metas:
                g.initializer.add().ParseFromString(meta)
        # Fields in their numbers' order, as protobuf (and onnx.save) writes them: OpenVINO's
        # format detection refuses a file whose opset_import and metadata come before the graph.
        head, after = onnx.ModelProto(), onnx.ModelProto()
        copy_fields(head, self.proto, exclude=("graph",))
        after.CopyFrom(head)
        for fd, _ in head.ListFields():
            (head if fd.number > GRAPH_FIELD else after).ClearField(fd.name)
        tail: list[Chunk] = []
        for meta, values in zip(metas, self.arrays.values()):
            raw = memoryview(values).cast("B")
            data_key = field_key(RAW_DATA_FIELD) + encode_varint(raw.nbytes)
            tail += [
                field_key(INITIALIZER_FIELD) + encode_varint(len(meta) + len(data_key) + raw.nbytes) + meta + data_key,
                raw,
            ]
        graph_size = len(graph_bytes) + _size(tail)
        chunks: list[Chunk] = [
            head.SerializeToString() + field_key(GRAPH_FIELD) + encode_varint(graph_size),
            graph_bytes,
            *tail,
            after.SerializeToString(),
        ]
        if _size(chunks) > PROTOBUF_LIMIT:
            return None
        return chunks

    def size(self) -> int:
        """Bytes the model takes serialised (its hollow tensors counted, not filled)."""
        chunks = self.encode()
        if chunks is None:
            return serialized_size(self.complete())
        return _size(chunks)

    def save(self, path: str | os.PathLike[str], external_data: bool | None = None) -> int:
        """Write the model like ``save_model``; returns the bytes written."""
        with self.staged(path, external_data) as staged:
            staged.commit()
        return staged.size

    def staged(self, path: str | os.PathLike[str], external_data: bool | None = None) -> StagedModel:
        """Write the model for ``path`` into a temporary folder beside it (see StagedModel)."""
        return StagedModel(self, os.fspath(path), external_data)

    def write_files(self, path: str, external_data: bool | None) -> tuple[int, list[str]]:
        """Write the model to ``path`` as it stands (the caller makes it atomic); returns the
        bytes written and the file names (the data file first)."""
        if not external_data:
            chunks = self.encode()
            if chunks is not None:
                with open(path, "wb") as f:
                    for chunk in chunks:
                        f.write(chunk)
                return _size(chunks), [os.path.basename(path)]
        return self._write_external(path)

    def _write_external(self, path: str) -> tuple[int, list[str]]:
        """The model with its weights in ``<name>.data`` beside it, each weight written from its
        array or, one at a time, from the model: no copy of the whole model is made (protobuf
        cannot encode one over 2 GB anyway)."""
        data_name = os.path.basename(path) + ".data"
        light = onnx.ModelProto()  # the model with references in place of its big weights
        copy_fields(light, self.proto, exclude=("graph",))
        copy_fields(light.graph, self.proto.graph, exclude=("initializer",))
        offset = 0
        with open(os.path.join(os.path.dirname(path), data_name), "wb") as f:
            for t in self.proto.graph.initializer:
                values = self.arrays.get(t.name)
                raw = memoryview(values).cast("B") if values is not None else t.raw_data
                if values is None and len(raw) < _EXTERNAL_THRESHOLD:  # small, or not raw data
                    light.graph.initializer.add().CopyFrom(t)
                    continue
                f.write(raw)
                ref = light.graph.initializer.add()
                ref.name, ref.data_type = t.name, t.data_type
                ref.dims.extend(t.dims)
                ref.data_location = onnx.TensorProto.EXTERNAL
                for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                    entry = ref.external_data.add()
                    entry.key, entry.value = key, value
                offset += len(raw)
                del raw
        data = light.SerializeToString()
        with open(path, "wb") as f:
            f.write(data)
        return len(data) + offset, [data_name, os.path.basename(path)]


class StagedModel:
    """A model written for ``path`` into a temporary folder beside it, under its final file
    names (so its external data resolves): it can be loaded and checked there, then
    ``commit()`` moves it into place (the data file first); leaving the ``with`` block
    without committing removes it. Nothing half-written ever stands at ``path``."""

    def __init__(self, model: DeferredModel, path: str, external_data: bool | None) -> None:
        import tempfile

        check_output_folder(path)
        if external_data:
            check_data_file(path + ".data")
        self.owned = True  # False once an Outputs has taken it over (see Outputs.add_model)
        self.destination = path
        self._folder = os.path.dirname(os.path.abspath(path))  # where the data file goes, as the model names it
        try:  # beside the file replaced (a link's target), so that the model's move is one rename
            folder = os.path.dirname(os.path.abspath(output_target(path)))
            self._tmpdir = tempfile.mkdtemp(prefix=f"{own_prefix(folder)}staged-", dir=folder)
        except OSError as exc:  # a folder it may not write
            raise WriteError(path, exc) from None
        self.path = os.path.join(self._tmpdir, os.path.basename(path))
        try:
            self.size, self._files = model.write_files(self.path, external_data)
        except OSError as exc:  # a full disk: name the destination, not the staging folder removed here
            self.discard()
            name = path
            if exc.filename and os.path.dirname(os.path.abspath(exc.filename)) == self._tmpdir:
                if os.path.basename(exc.filename) != os.path.basename(path):  # the data file
                    name = os.path.join(self._folder, os.path.basename(exc.filename))
            raise WriteError(name, exc) from None
        except BaseException:
            self.discard()
            raise
        if len(self._files) > 1:  # external data (asked for, or past the protobuf limit)
            try:
                check_data_file(os.path.join(self._folder, self._files[0]))
            except BaseException:
                self.discard()
                raise

    @property
    def folder(self) -> str:
        """The destination's folder."""
        return self._folder

    @property
    def staging_folder(self) -> str:
        return self._tmpdir

    @property
    def destinations(self) -> list[str]:
        """Where the files go (the data file first)."""
        return [os.path.join(self._folder, name) for name in self._files]

    @property
    def file_names(self) -> tuple[str, ...]:
        """The names written (the data file first), in the destination's folder after commit."""
        return tuple(self._files)

    def commit(self, replacement: Replacement | None = None) -> None:
        """Move the files into place (the data file first); an error names the destination, not
        the staging folder, and puts back the files moved before it (the previous model's data
        file, or none). Within ``replacement`` (an Outputs' commit) its owner keeps or undoes it."""
        own = replacement is None
        replacement = replacement or Replacement()
        replaced = replaced_data_file(self.destination, self._files) if own else None  # an Outputs' commit: its own
        with holding_interrupts() if own else contextlib.nullcontext():  # an Outputs' commit holds them
            try:
                if own:
                    replacement.keep(self.destinations)
                for name in self._files:
                    target = os.path.join(self._folder, name)
                    replacement.move(
                        os.path.join(self._tmpdir, name),
                        target,
                        target if name != os.path.basename(self.destination) else self.destination,
                    )
                if own:
                    replacement.finish()
                    remove_replaced_data(replaced)
            except BaseException:
                if own:
                    replacement.undo()
                raise
            finally:
                self.discard()

    def discard(self) -> None:
        import shutil

        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> StagedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            self.discard()


_EXTERNAL_THRESHOLD = 1024  # bytes; smaller tensors stay in the model file, as onnx does


def plain_array(values: np.ndarray) -> np.ndarray | None:
    """``values`` as a little-endian array whose bytes are ONNX raw data, or None for types
    only onnx's converter handles (see wire.RAW_DTYPES)."""
    little = values.dtype.newbyteorder("<") if values.dtype.kind in "fiub" else None
    if little not in _PLAIN:
        return None
    return values.astype(little, copy=False)  # no copy on little-endian hosts


_PLAIN = set(RAW_DTYPES.values())
