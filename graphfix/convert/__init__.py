"""Importers: every source format becomes a `graphfix.Model` (ONNX).

`load()` picks the importer from the file name: `*-symbol.json` / `*.json` is MXNet,
`*.prototxt` is Caffe, `*.onnx` is ONNX.
"""

from __future__ import annotations

__all__ = ["load", "detect_format", "parse_input_shapes"]

import os
from typing import Any

from graphfix.errors import GraphfixError
from graphfix.model import Model, SourceHasher, load_onnx


def detect_format(path: str | os.PathLike) -> str:
    """'mxnet', 'caffe' or 'onnx', from the file name (then the first bytes)."""
    name = os.fspath(path).lower()
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(".json"):
        return "mxnet"
    if name.endswith((".prototxt", ".pbtxt")):
        return "caffe"
    if name.endswith((".params", ".caffemodel")):
        kind = "MXNet" if name.endswith(".params") else "Caffe"
        wanted = "the -symbol.json file" if kind == "MXNet" else "the deploy .prototxt"
        raise GraphfixError(f"this is a {kind} weights file; pass {wanted} as MODEL", kind="usage", path=path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(256).lstrip()
    except OSError as exc:
        raise GraphfixError(f"cannot read file ({exc.strerror})", path=path) from exc
    if head.startswith(b"{"):
        return "mxnet"
    if b"layer" in head or b"input" in head or b"name:" in head:
        return "caffe"
    return "onnx"


def parse_input_shapes(spec: str | list[str] | dict | None) -> dict[str, tuple[int, ...]] | None:
    """`"data:1,3,224,224"` (or a list of them, or a dict) -> {"data": (1, 3, 224, 224)}.

    A spec without a name (`"1,3,224,224"`) is returned under the key "" (the only input).
    """
    if spec is None or isinstance(spec, dict):
        return spec
    specs = [spec] if isinstance(spec, str) else list(spec)
    out: dict[str, tuple[int, ...]] = {}
    for item in specs:
        for part in item.split(";"):
            part = part.strip()
            if not part:
                continue
            name, _, dims = part.rpartition(":")
            try:
                shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
            except ValueError:
                shape = ()
            if not shape or any(d <= 0 for d in shape):
                raise GraphfixError(
                    f"bad --input-shape {part!r}", kind="usage", hint="expected NAME:1,3,224,224"
                )
            out[name] = shape
    return out


def load(
    path: str | os.PathLike,
    *,
    params: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    input_shape: Any = None,
    outputs: list[str] | None = None,
    format: str | None = None,
) -> Model:
    """Load any supported model file as a `Model`.

    Args:
        path: `x-symbol.json` (MXNet), `deploy.prototxt` (Caffe) or `x.onnx`.
        params: MXNet params file (default: the highest-epoch `x-NNNN.params` beside the JSON).
        weights: Caffe caffemodel (default: the only `.caffemodel` beside the prototxt).
        input_shape: `"data:1,3,224,224"` or a dict, for formats that do not store one.
        outputs: Caffe: cut the graph at these blobs.
        format: Force 'mxnet', 'caffe' or 'onnx'.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise GraphfixError("no such file", path=path)
    fmt = format or detect_format(path)
    shapes = parse_input_shapes(input_shape)
    if fmt == "onnx":
        with SourceHasher("onnx", [path]) as hasher:  # hashes beside parsing
            model = load_onnx(path)
            if "graphfix.source" not in model.ir.metadata_props:
                model.defer_metadata(source=hasher)
        return model
    if fmt == "mxnet":
        from graphfix.convert.mxnet import load_mxnet

        return load_mxnet(path, params=params, input_shape=shapes)
    if fmt == "caffe":
        from graphfix.convert.caffe import load_caffe

        return load_caffe(path, weights=weights, input_shape=shapes, outputs=outputs)
    raise GraphfixError(f"unknown model format {fmt!r}", kind="usage", path=path)
