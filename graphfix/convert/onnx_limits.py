"""Checks on an ONNX file's declared tensor data, done before any tensor data is read.

1. External data: the location must be relative, without `..`, and resolve (symlinks followed)
   inside the model's folder; offset and length must be integers that fit the data file, and
   the length must equal what the tensor's dims and dtype declare.
2. Inline data: raw_data must be exactly as long as the dims and dtype declare; dims >= 0.
3. Size limits: at most MAX_NODES nodes and MAX_SUBGRAPH_DEPTH levels of nested graphs.
"""

from __future__ import annotations

__all__ = ["check_tensor_data", "location_problem", "MAX_NODES", "MAX_SUBGRAPH_DEPTH"]

import os
from typing import Iterator

import numpy as np
import onnx

from graphfix.errors import GraphfixError

MAX_NODES = 1_000_000
MAX_SUBGRAPH_DEPTH = 16


def _itemsize(data_type: int) -> int | None:
    """Bytes per element, or None for variable-size or sub-byte types."""
    if data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(data_type)
    except Exception:
        return None
    bits = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    if data_type in bits or getattr(onnx.TensorProto, "FLOAT4E2M1", -1) == data_type:
        return None
    return np.dtype(np_dtype).itemsize


def _graph_tensors(graph: onnx.GraphProto, depth: int, path: str) -> Iterator[onnx.TensorProto]:
    if depth > MAX_SUBGRAPH_DEPTH:
        raise GraphfixError(f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} levels", path=path)
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g, depth + 1, path)
            for g in attr.graphs:
                yield from _graph_tensors(g, depth + 1, path)


def _count_nodes(graph: onnx.GraphProto) -> int:
    total = len(graph.node)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                total += _count_nodes(attr.g)
            total += sum(_count_nodes(g) for g in attr.graphs)
    return total


def location_problem(location: str, base: str | None) -> tuple[str, str] | None:
    """What is wrong with an external-data `location` for a model in folder `base`, if anything.

    Returns:
        None, or (kind, message): kind "location" (no location, absolute, `..`, or resolving
        outside `base` through symlinks) or "missing" (no such file beside the model). Without
        a `base` only the text of the location is checked.
    """
    if not location:
        return "location", "external data has no location"
    if "\x00" in location or os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        return "location", f"external data location {location!r} is absolute"
    if ".." in location.replace("\\", "/").split("/"):
        return "location", f"external data location {location!r} leaves the model's folder"
    if not base:
        return None
    real_base = os.path.realpath(base)
    target = os.path.realpath(os.path.join(real_base, location))
    if os.path.commonpath([real_base, target]) != real_base:
        return "location", f"external data location {location!r} resolves outside the model's folder"
    if not os.path.isfile(target):
        return "missing", f"external data file {location!r} not found beside the model"
    return None


def _check_location(location: str, base: str, path: str, name: str) -> str:
    problem = location_problem(location, base)
    if problem is not None:
        raise GraphfixError(f"tensor {name!r}: {problem[1]}", path=path)
    return os.path.realpath(os.path.join(os.path.realpath(base), location))


def _declared_bytes(tensor: onnx.TensorProto, path: str) -> int | None:
    if any(d < 0 for d in tensor.dims):
        raise GraphfixError(f"tensor {tensor.name!r}: negative dimension in {list(tensor.dims)}", path=path)
    itemsize = _itemsize(tensor.data_type)
    if itemsize is None:
        return None
    count = 1
    for d in tensor.dims:
        count *= int(d)
    return count * itemsize


def check_tensor_data(proto: onnx.ModelProto, path: str) -> None:
    """Raise GraphfixError if any tensor's declared data does not match what is stored.

    Args:
        proto: The model, parsed without external data.
        path: The model file (its folder is the only place external data may live).
    """
    if _count_nodes(proto.graph) > MAX_NODES:
        raise GraphfixError(f"more than {MAX_NODES} nodes", path=path)
    base = os.path.dirname(os.path.abspath(path))
    sizes: dict[str, int] = {}
    for tensor in _graph_tensors(proto.graph, 0, path):
        declared = _declared_bytes(tensor, path)
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            target = _check_location(info.get("location", ""), base, path, tensor.name)
            try:
                offset = int(info.get("offset", "0"))
                length = int(info["length"]) if "length" in info else None
            except ValueError:
                raise GraphfixError(f"tensor {tensor.name!r}: external data offset/length are not integers", path=path) from None
            file_size = sizes.setdefault(target, os.path.getsize(target))
            if length is None:
                length = file_size - offset
            if offset < 0 or length < 0 or offset + length > file_size:
                raise GraphfixError(
                    f"tensor {tensor.name!r}: external data [{offset}, {offset + length}) exceeds "
                    f"{os.path.basename(target)} ({file_size} bytes)", path=path,
                )
            if declared is not None and length != declared:
                raise GraphfixError(
                    f"tensor {tensor.name!r}: external data holds {length} bytes, dims {list(tensor.dims)} declare {declared}",
                    path=path,
                )
        elif tensor.HasField("raw_data") and declared is not None and len(tensor.raw_data) != declared:
            raise GraphfixError(
                f"tensor {tensor.name!r}: raw data holds {len(tensor.raw_data)} bytes, dims {list(tensor.dims)} declare {declared}",
                path=path,
            )
