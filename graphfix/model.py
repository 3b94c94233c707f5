"""`Model`: an ONNX model (held as onnx-ir) plus graphfix metadata; save, load and run.

Every pipeline stage takes a Model and returns a new one (graph cloned, tensors shared), so the
input is never changed. Saving is atomic (temp file in the destination folder, then rename),
deterministic (the same model gives the same bytes) and streams initializers one at a time, so
peak memory stays near one copy of the weights.
"""

from __future__ import annotations

__all__ = [
    "Model", "META_PREFIX", "HEAD_STATES", "load_onnx", "cpu_session", "set_metadata", "source_metadata", "SourceHasher",
    "atomic_write", "head_state", "read_metadata",
]

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from graphfix.errors import GraphfixError
from graphfix.irutil import varint as _varint
from graphfix.output import atomic_write  # noqa: F401 - re-exported for older callers
from graphfix.output import staged as staged_path
from graphfix.progress import bar

logger = logging.getLogger(__name__)

#: Prefix of graphfix's keys in the model's metadata_props.
META_PREFIX = "graphfix."
#: Keys whose values are JSON documents.
_JSON_KEYS = ("labels", "thresholds", "preprocess", "source", "head", "training", "calibration", "export", "int8")
#: Protobuf size limit: above it the model is written with external data.
_PROTO_LIMIT = 2**31 - 1
#: Models with more weight bytes than this show a progress bar while saving.
_BAR_BYTES = 256 << 20


class Model:
    """An ONNX model plus graphfix metadata.

    Attributes:
        ir: The onnx-ir model. Treat it as read-only: stages clone it.
        path: The file it was loaded from, if any.
    """

    def __init__(self, ir_model: ir.Model, *, path: str | os.PathLike | None = None) -> None:
        self.ir = ir_model
        self.path = os.fspath(path) if path is not None else None
        self._session = None
        #: graphfix.* metadata still being computed (key -> object with .result()), e.g. the
        #: source hash, which runs beside conversion and saving and is written last.
        self._pending: dict[str, Any] = {}

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def from_proto(cls, proto: onnx.ModelProto, *, path: str | os.PathLike | None = None) -> Model:
        """Wrap an `onnx.ModelProto` (tensors are shared, not copied)."""
        return cls(ir.serde.deserialize_model(proto), path=path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Load an ONNX file; same as `graphfix.load` for `.onnx` files."""
        return load_onnx(path)

    def copy(self) -> Model:
        """A new Model with a cloned graph; tensors are shared (they are never edited in place)."""
        new = Model(self.ir.clone(), path=self.path)
        new._pending = dict(self._pending)
        return new

    def defer_metadata(self, **jobs: Any) -> None:
        """Set graphfix.* keys from jobs still running (objects with `.result()`), resolved on
        first read of `metadata` or when saving, after the weights are written."""
        self._pending.update(jobs)

    def _resolve(self) -> None:
        for key, job in list(self._pending.items()):
            set_metadata(self.ir, **{key: job.result()})
            del self._pending[key]

    # ----- facts --------------------------------------------------------------------------
    @property
    def opset(self) -> int:
        """The default-domain opset version."""
        return int(self.ir.opset_imports.get("", self.ir.opset_imports.get("ai.onnx", 0)))

    @property
    def graph(self) -> ir.Graph:
        return self.ir.graph

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.ir.graph.inputs if v.name not in self.ir.graph.initializers]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.ir.graph.outputs]

    def io_info(self) -> dict[str, list[dict[str, Any]]]:
        """Graph inputs and outputs with dtype and shape (symbolic dims as strings)."""

        def describe(v: ir.Value) -> dict[str, Any]:
            shape = None
            if v.shape is not None:
                shape = [d if isinstance(d, int) else (str(d.value) if d.value else "?") for d in v.shape]
            return {"name": v.name, "dtype": v.dtype.name if v.dtype is not None else None, "shape": shape}

        return {
            "inputs": [describe(v) for v in self.ir.graph.inputs if v.name not in self.ir.graph.initializers],
            "outputs": [describe(v) for v in self.ir.graph.outputs],
        }

    def op_histogram(self) -> dict[str, int]:
        """Op type -> count over the main graph, most frequent first."""
        counts = Counter(n.op_type if not n.domain else f"{n.domain}::{n.op_type}" for n in self.ir.graph)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def weight_bytes(self) -> int:
        """Total bytes of all initializers (STRING tensors count their characters)."""
        return sum(_nbytes(v.const_value) for v in self.ir.graph.initializers.values() if v.const_value is not None)

    # ----- metadata -----------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, Any]:
        """graphfix.* metadata, JSON values decoded, keys without the prefix."""
        self._resolve()
        return _decode_metadata(self.ir.metadata_props.items())

    @property
    def labels(self) -> list[str] | None:
        return self.metadata.get("labels")

    @property
    def thresholds(self) -> list[float] | None:
        return self.metadata.get("thresholds")

    @property
    def preprocess(self) -> dict[str, Any] | None:
        return self.metadata.get("preprocess")

    def with_metadata(self, **values: Any) -> Model:
        """A copy (graph cloned, tensors shared) with graphfix.* metadata set; None removes a key."""
        new = self.copy()
        for key in values:
            new._pending.pop(key, None)
        set_metadata(new.ir, **values)
        return new

    # ----- serialisation ------------------------------------------------------------------
    def written_ir_version(self) -> int:
        """The IR version `save` writes: kept when in 8..10, else the nearest allowed one."""
        from graphfix.convert._onnx import ir_version_for  # graphfix.convert imports this module

        return ir_version_for(self.opset, self.ir.ir_version)

    def to_proto(self) -> onnx.ModelProto:
        """A full ModelProto (copies the weights; prefer `save` for large models)."""
        self._resolve()
        proto = ir.serde.serialize_model(self.ir)
        proto.ir_version = self.written_ir_version()
        return proto

    def to_bytes(self) -> bytes:
        """The serialized model, byte-identical to what `save` writes (models under 2 GB)."""
        import io

        buf = io.BytesIO()
        _write_streaming(self.ir, buf, self.written_ir_version(), self._resolve)
        return buf.getvalue()

    def sha256(self) -> str:
        """Hex sha256 of the bytes `save` writes (computed without holding them)."""
        digest = hashlib.sha256()

        class _Sink:
            def write(self, data) -> int:
                digest.update(data)
                return len(data)

        _write_streaming(self.ir, _Sink(), self.written_ir_version(), self._resolve)  # type: ignore[arg-type]
        return digest.hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model atomically (`graphfix.output.staged`: its own OutputSet, or the open set
        that staged `path`); external data
        (`<name>.data`, committed together with the model) above 2 GB.

        Returns:
            The path written.
        """
        with staged_path(path) as staged:
            if _needs_external_data(self.ir):
                self._resolve()
                stamped = self.ir.clone()  # tensors shared; only the copy gets the IR version
                stamped.ir_version = self.written_ir_version()
                ir.save(stamped, staged, external_data=os.path.basename(staged) + ".data", size_threshold_bytes=1024)
            else:
                with open(staged, "wb") as fh:
                    _write_streaming(self.ir, fh, self.written_ir_version(), self._resolve)
        return Path(path)

    # ----- running ------------------------------------------------------------------------
    def session(self):
        """A cached onnxruntime CPU InferenceSession for this model."""
        if self._session is None:
            if _needs_external_data(self.ir):
                tmp = tempfile.mkdtemp(prefix="graphfix-run-")
                self.save(os.path.join(tmp, "model.onnx"))
                src: Any = os.path.join(tmp, "model.onnx")
            else:
                src = self.to_bytes()
            self._session = cpu_session(src, self.path)
        return self._session

    def run(
        self, feeds: dict[str, np.ndarray] | np.ndarray, outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run on CPU with onnxruntime; a bare array feeds the only input.

        Returns:
            Output name -> array, for `outputs` (default: all graph outputs).
        """
        sess = self.session()
        if not isinstance(feeds, dict):
            names = [i.name for i in sess.get_inputs()]
            if len(names) != 1:
                raise GraphfixError(f"model has {len(names)} inputs {names}; pass a dict", kind="usage")
            feeds = {names[0]: feeds}
        names = outputs or [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds)))

    def __repr__(self) -> str:
        return (
            f"Model(path={self.path!r}, opset={self.opset}, nodes={len(self.ir.graph)}, "
            f"inputs={self.input_names}, outputs={self.output_names})"
        )


# ----- metadata helpers ---------------------------------------------------------------------
def _decode_metadata(items: Any) -> dict[str, Any]:
    """graphfix.* (key, value) pairs as a dict: prefix dropped, JSON values decoded."""
    out: dict[str, Any] = {}
    for key, value in items:
        if not key.startswith(META_PREFIX):
            continue
        short = key[len(META_PREFIX) :]
        if short in _JSON_KEYS:
            try:
                out[short] = json.loads(value)
            except json.JSONDecodeError:
                out[short] = value
        else:
            out[short] = value
    return out


#: The states of a graphfix head, in pipeline order (see `head_state`).
HEAD_STATES = ("untrained", "trained", "calibrated")
#: Metadata keys that only a graphfix head carries.
_HEAD_KEYS = ("head", "labels", "training", "calibration", "thresholds")


def head_state(source: Model | dict[str, Any]) -> str | None:
    """Where a model's graphfix head stands, from its metadata (a Model or `Model.metadata`).

    Returns:
        None: no graphfix head (no graphfix.head/labels/training/calibration/thresholds).
        "untrained": a head from swap-head with no `graphfix.training` (its weights are random;
            also after `calibrate --untrained`).
        "trained": `graphfix.training` and no thresholds.
        "calibrated": trained, with `graphfix.calibration` or `graphfix.thresholds`.
    """
    meta = source.metadata if isinstance(source, Model) else source
    if not any(k in meta for k in _HEAD_KEYS):
        return None
    if not meta.get("training"):
        return "untrained"
    return "calibrated" if meta.get("calibration") or meta.get("thresholds") else "trained"


def _read_varint(fh: BinaryIO) -> int | None:
    """A protobuf varint from `fh`; None at the end of the file or on a malformed one."""
    value = shift = 0
    while shift < 64:
        byte = fh.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
    return None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The graphfix.* metadata of an ONNX file without parsing its graph (as `Model.metadata`).

    Walks the ModelProto's top-level fields, seeking past the graph; a file that is not a
    well-formed ModelProto gives what was read before the problem (often {}), never an error,
    so a command can say a model's state before (or without) loading it.
    """
    items: list[tuple[str, str]] = []
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            while (tag := _read_varint(fh)) is not None:
                field, wire = tag >> 3, tag & 7
                if wire == 0:
                    if _read_varint(fh) is None:
                        break
                elif wire in (1, 5):
                    fh.seek(8 if wire == 1 else 4, os.SEEK_CUR)
                elif wire == 2:
                    length = _read_varint(fh)
                    if length is None or fh.tell() + length > size:
                        break
                    if field != _METADATA_FIELD:
                        fh.seek(length, os.SEEK_CUR)
                        continue
                    entry = onnx.StringStringEntryProto()
                    entry.ParseFromString(fh.read(length))
                    items.append((entry.key, entry.value))
                else:
                    break
    except (OSError, ValueError, DecodeError):  # unreadable, or an entry that is not one
        pass
    return _decode_metadata(items)


def cpu_session(src: bytes | str, path: str | os.PathLike | None = None, providers: list[str] | None = None,
                threads: int | None = None):
    """The one way graphfix opens an onnxruntime session: model bytes or file, CPU provider unless
    `providers` says otherwise, `threads` intra-op threads (default: onnxruntime's), no log lines;
    `path` is named when onnxruntime refuses the model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only: a refusal is raised (one line), not logged beside it
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(src, opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime refuses the model
        raise GraphfixError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}", path=path) from exc


def set_metadata(model: ir.Model, **values: Any) -> None:
    """Set graphfix.* metadata_props on an onnx-ir model in place (None removes a key)."""
    for key, value in values.items():
        full = META_PREFIX + key
        if value is None:
            model.metadata_props.pop(full, None)
        elif isinstance(value, str) and key not in _JSON_KEYS:
            model.metadata_props[full] = value
        else:
            model.metadata_props[full] = json.dumps(value, sort_keys=True, separators=(",", ":"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22, cancel: threading.Event | None = None) -> str:
    """Hex sha256 of a file, read in chunks; stops early (returns "") once `cancel` is set."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            if cancel is not None and cancel.is_set():
                return ""
            h.update(block)
    return h.hexdigest()


def source_metadata(fmt: str, files: list[str | os.PathLike], cancel: threading.Event | None = None) -> dict[str, Any]:
    """The `graphfix.source` document: format and sha256 of each source file (by base name)."""
    return {"format": fmt, "files": {os.path.basename(f): sha256_file(f, cancel=cancel) for f in files}}


class SourceHasher:
    """`source_metadata` on a background thread (hashlib releases the GIL), stopped on error.

        with SourceHasher("mxnet", [symbol, params]) as hasher:
            model = convert(...)                      # runs beside the hashing
            model.defer_metadata(source=hasher)       # resolved when saved, after the weights

    Leaving the block waits for the hashing to end; by an exception it first stops it at its next
    4 MB chunk, so a file refused early (a broken 3 GB params file) is not hashed to the end.
    """

    def __init__(self, fmt: str, files: list[str | os.PathLike]) -> None:
        self._cancel = threading.Event()
        self._result: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fmt, files), name="graphfix-sha256", daemon=True)

    def _run(self, fmt: str, files: list[str | os.PathLike]) -> None:
        try:
            self._result = source_metadata(fmt, files, cancel=self._cancel)
        except BaseException as exc:  # re-raised in result()
            self._error = exc

    def __enter__(self) -> SourceHasher:
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:  # stop hashing a refused file
            self._cancel.set()
        # On success wait too: the hashes must describe the bytes just converted, not a file
        # changed after the load returned (hashing overlaps the conversion, not what follows).
        self._thread.join()

    def result(self) -> dict[str, Any]:
        """The `graphfix.source` document (waits for the hashing to finish)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


# ----- writing ------------------------------------------------------------------------------
_GRAPH_FIELD = 7  # ModelProto.graph
_INITIALIZER_FIELD = 5  # GraphProto.initializer
_METADATA_FIELD = 14  # ModelProto.metadata_props


_RAW_DATA_TAG = _varint((9 << 3) | 2)  # TensorProto.raw_data


def _tensor_header(value: ir.Value) -> tuple[bytes, bool]:
    """One initializer's TensorProto without its raw_data: (serialized, raw_data follows).

    STRING tensors have no raw_data form and are serialized whole here.
    """
    tensor = value.const_value
    if tensor.dtype == ir.DataType.STRING:
        proto = ir.serde.serialize_tensor(tensor)
        proto.name = value.name
        return proto.SerializeToString(deterministic=True), False
    header = onnx.TensorProto(name=value.name, data_type=tensor.dtype.value, dims=[int(d) for d in tensor.shape])
    if tensor.doc_string:
        header.doc_string = tensor.doc_string
    for key, val in tensor.metadata_props.items():
        entry = header.metadata_props.add()
        entry.key, entry.value = key, val
    return header.SerializeToString(deterministic=True), True


def _tensor_data(tensor: ir.TensorProtocol) -> memoryview | bytes:
    """The tensor's little-endian bytes, without a copy for plain numpy-backed tensors."""
    raw = getattr(tensor, "raw", None)
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "fiub" and raw.dtype.type.__module__ == "numpy":
        arr = np.ascontiguousarray(raw).astype(raw.dtype.newbyteorder("<"), copy=False)
        return memoryview(arr).cast("B")
    return tensor.tobytes()


def _skeleton(model: ir.Model, ir_version: int) -> onnx.ModelProto:
    """The model proto, stamped with `ir_version`, with every initializer left out."""
    inits = list(model.graph.initializers.values())
    saved = [v.const_value for v in inits]
    serde_logger = logging.getLogger("onnx_ir.serde")
    level = serde_logger.level
    serde_logger.setLevel(logging.ERROR)  # it warns about each initializer without data
    try:
        for v in inits:
            v.const_value = None
        proto = ir.serde.serialize_model(model)
    finally:
        for v, t in zip(inits, saved):
            v.const_value = t
        serde_logger.setLevel(level)
    proto.ir_version = ir_version
    proto.ClearField("metadata_props")  # written last, see _write_streaming
    # value_info with a dtype but no shape says nothing and fails onnx.checker: drop it
    keep = [vi for vi in proto.graph.value_info if not vi.type.HasField("tensor_type") or vi.type.tensor_type.HasField("shape")]
    if len(keep) != len(proto.graph.value_info):
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(keep)
    return proto


def _write_streaming(model: ir.Model, fh: BinaryIO, ir_version: int, resolve: Callable[[], None] | None = None) -> None:
    """Serialize `model` to `fh`, streaming each initializer's bytes from its own buffer.

    Protobuf allows a message's fields in any order, so the layout is: the model's other
    fields; the graph as its skeleton followed by the initializer records (each a small header
    then its raw_data); then metadata_props, sorted by key. Every length is known from the
    headers and the tensors' byte counts, so nothing is serialized twice. Metadata goes last so
    that `resolve` (metadata still being computed, such as the source hash) runs beside the
    writing of the weights. The layout is fixed, so the output is deterministic.
    """
    skeleton = _skeleton(model, ir_version)
    graph_bytes = skeleton.graph.SerializeToString(deterministic=True)
    skeleton.ClearField("graph")
    head = skeleton.SerializeToString(deterministic=True)
    inits = [v for v in model.graph.initializers.values() if v.const_value is not None]
    headers = [_tensor_header(v) for v in inits]
    sizes = [
        len(h) + (len(_RAW_DATA_TAG) + len(_varint(v.const_value.nbytes)) + v.const_value.nbytes if raw else 0)
        for v, (h, raw) in zip(inits, headers)
    ]
    tag = _varint((_INITIALIZER_FIELD << 3) | 2)
    graph_len = len(graph_bytes) + sum(len(tag) + len(_varint(s)) + s for s in sizes)
    fh.write(head)
    fh.write(_varint((_GRAPH_FIELD << 3) | 2))
    fh.write(_varint(graph_len))
    fh.write(graph_bytes)
    total = sum(sizes)
    with bar(total=total if total > _BAR_BYTES else 0, desc="saving", unit="B", unit_scale=True) as progress:
        for value, (header, raw), size in zip(inits, headers, sizes):
            fh.write(tag)
            fh.write(_varint(size))
            fh.write(header)
            if raw:
                data = _tensor_data(value.const_value)
                if len(data) != value.const_value.nbytes:
                    raise RuntimeError(f"tensor {value.name}: {len(data)} bytes, expected {value.const_value.nbytes}")
                fh.write(_RAW_DATA_TAG)
                fh.write(_varint(len(data)))
                fh.write(data)
            progress.update(size)
    if resolve is not None:
        resolve()
    tag = _varint((_METADATA_FIELD << 3) | 2)
    for key, value in sorted(model.metadata_props.items()):
        entry = onnx.StringStringEntryProto(key=key, value=value).SerializeToString(deterministic=True)
        fh.write(tag)
        fh.write(_varint(len(entry)))
        fh.write(entry)


def _nbytes(tensor: ir.TensorProtocol) -> int:
    if tensor.dtype == ir.DataType.STRING:
        return sum(len(b) for b in tensor.string_data())
    return tensor.nbytes


def _needs_external_data(model: ir.Model) -> bool:
    total = 0
    for v in model.graph.initializers.values():
        t = v.const_value
        if t is None:
            continue
        if isinstance(t, ir.ExternalTensor):
            return True
        total += _nbytes(t)
    return total > _PROTO_LIMIT - (64 << 20)


# ----- loading ------------------------------------------------------------------------------
def load_onnx(path: str | os.PathLike) -> Model:
    """Load an ONNX file with clear errors for missing, empty, truncated or non-ONNX files."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise GraphfixError("no such file", path=path)
    if os.path.isdir(path):
        raise GraphfixError("is a folder, not an ONNX file", path=path)
    size = os.path.getsize(path)
    if size == 0:
        raise GraphfixError("file is empty", path=path)
    if size > _PROTO_LIMIT:
        raise GraphfixError("ONNX protobuf is larger than 2 GB; save it with external data", path=path)
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise GraphfixError(
            f"not a valid ONNX file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'parse failed'})",
            path=path,
        ) from exc
    if not proto.HasField("graph") or not proto.graph.node or not proto.graph.output:
        raise GraphfixError("not an ONNX model: no graph with nodes and outputs", path=path)
    if not proto.opset_import:
        raise GraphfixError("not an ONNX model: no opset_import", path=path)
    from graphfix.convert.onnx_limits import check_tensor_data

    check_tensor_data(proto, path)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as exc:
        raise GraphfixError(f"malformed ONNX graph: {str(exc).splitlines()[0]}", path=path) from exc
    ir.external_data.set_base_dir(model.graph, os.path.dirname(os.path.abspath(path)))
    from onnx_ir.passes.common import TopologicalSortPass

    TopologicalSortPass()(model)  # some exporters write unsorted graphs; cloning needs order
    return Model(model, path=path)
