"""Read a binary `.caffemodel` (and `.binaryproto` mean files) without Caffe or protobuf.

The file is memory-mapped and decoded by `_wire`; each blob's packed floats become a
`numpy.frombuffer` view of the map, so reading costs one pass over the record headers and no copy
of the weights. Blobs are matched to deploy layers by layer name; layers without blobs (Data, loss,
Accuracy, Split, Silence...) are ignored.
"""

from __future__ import annotations

__all__ = ["CaffeModel", "read_caffemodel", "blob_to_array", "read_binaryproto"]

import logging
import mmap
import os
from dataclasses import dataclass, field

import numpy as np

from graphfix.convert.caffe._schema import Msg
from graphfix.convert.caffe._upgrade import net_layers
from graphfix.convert.caffe._wire import WireError, decode
from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)


@dataclass
class CaffeModel:
    """Weights of a caffemodel: layer name -> blobs (float32 arrays in their stored shape)."""

    path: str
    blobs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    transform_params: list[Msg] = field(default_factory=list)


def blob_to_array(blob: Msg, where: str, path: str | None = None) -> np.ndarray:
    """A BlobProto as a float32 array of its declared shape (legacy num/channels/height/width too).

    The declared element count is checked against the stored data before anything is allocated.
    """
    if "shape" in blob:
        shape = tuple(int(d) for d in blob.shape.dim)
    elif any(k in blob for k in ("num", "channels", "height", "width")):
        shape = (int(blob.num), int(blob.channels), int(blob.height), int(blob.width))
    else:
        shape = None
    data = blob.get("data")
    if data is None or len(data) == 0:
        double = blob.get("double_data")
        data = np.zeros(0, np.float32) if double is None else double
    count = int(np.prod(shape, dtype=object)) if shape is not None else len(data)
    if shape is not None and any(d < 0 for d in shape):
        raise GraphfixError(f"{where} declares a negative dimension {shape}", path=path)
    if count != len(data):
        raise GraphfixError(
            f"{where} declares shape {'x'.join(map(str, shape or ()))} = {count} values but stores {len(data)}",
            path=path,
        )
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    return data.reshape(shape if shape is not None else (count,))


def _map(path: str) -> mmap.mmap | bytes:
    size = os.path.getsize(path)
    if size == 0:
        raise GraphfixError("file is empty", path=path)
    with open(path, "rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def read_caffemodel(path: str | os.PathLike) -> CaffeModel:
    """Read a caffemodel (V1 or V2 NetParameter, deploy or training net).

    Raises:
        GraphfixError: on a missing, empty, truncated or malformed file, or a blob whose data
            disagrees with its declared shape.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise GraphfixError("no such caffemodel file", path=path)
    buf = _map(path)
    try:
        net = decode(buf, "NetParameter")
    except WireError as exc:
        raise GraphfixError(f"not a valid caffemodel (truncated or corrupt): {exc}", path=path) from exc
    layers = net_layers(net, phase_filter=False)
    if not layers:
        raise GraphfixError("not a caffemodel: no layers found", path=path)
    model = CaffeModel(path)
    for layer in layers:
        if "transform_param" in layer.msg:
            model.transform_params.append(layer.msg.transform_param)
        raw = layer.msg.get("blobs", [])
        if not raw:
            continue
        if layer.name in model.blobs:
            logger.warning("%s: layer %s has weights twice; using the first", path, layer.name)
            continue
        model.blobs[layer.name] = [
            blob_to_array(b, f"blob {i} of layer {layer.name!r}", path) for i, b in enumerate(raw)
        ]
        model.types[layer.name] = layer.type
    logger.debug("%s: %d layers, %d with weights", path, len(layers), len(model.blobs))
    return model


def read_binaryproto(path: str | os.PathLike) -> np.ndarray:
    """A `.binaryproto` BlobProto (mean file) as a float32 array."""
    path = os.fspath(path)
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        blob = decode(data, "BlobProto")
    except WireError as exc:
        raise GraphfixError(f"not a valid binaryproto mean file: {exc}", path=path) from exc
    return np.array(blob_to_array(blob, "mean blob", path))
