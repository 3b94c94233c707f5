"""Caffe importer: deploy prototxt + caffemodel (V1 or V2) to a graphfix `Model`, without Caffe.

    from graphfix.convert.caffe import load_caffe
    model = load_caffe("deploy.prototxt", weights="net.caffemodel")

The prototxt is read by a tolerant text parser (`_prototxt`), the caffemodel by a hand-written
wire-format reader over a memory map (`_wire`, `_caffemodel`): weights are numpy views of the file,
wrapped (not copied) as ONNX initializers. Layer converters live in `layers_*.py` and register in
`_table.py`, which is the only list of supported layers (`SUPPORTED_LAYERS`).
"""

from __future__ import annotations

__all__ = ["load_caffe", "SUPPORTED_LAYERS", "NO_ONNX_LAYERS"]

import glob
import logging
import os
from typing import Any

import numpy as np

from graphfix.convert._onnx import DEFAULT_OPSET
from graphfix.convert.caffe._caffemodel import CaffeModel, read_binaryproto, read_caffemodel
from graphfix.convert.caffe._driver import NetInput, build_graph
from graphfix.convert.caffe._prototxt import PrototxtError, parse_prototxt
from graphfix.convert.caffe._schema import Msg
from graphfix.convert.caffe._table import CONVERTERS, DATA_LAYERS, NO_ONNX_LAYERS, SUPPORTED_LAYERS
from graphfix.convert.caffe._upgrade import Layer, net_layers
from graphfix.errors import GraphfixError
from graphfix.model import Model, SourceHasher, set_metadata

logger = logging.getLogger(__name__)

#: Opsets the converters can write (Pad/Clip/TopK take inputs from 11; axes inputs switch at 13).
MIN_OPSET, MAX_OPSET = 11, 21


def load_caffe(
    path: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    input_shape: dict[str, tuple[int, ...]] | None = None,
    outputs: list[str] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
) -> Model:
    """Convert a Caffe deploy prototxt (and its caffemodel) to a `Model`.

    Args:
        path: The deploy `.prototxt` (V1 `layers` or V2 `layer`).
        weights: The `.caffemodel` (deploy or training net; blobs matched by layer name).
            Default: the only `.caffemodel` beside the prototxt, if exactly one.
        input_shape: Input name -> shape overriding the declared one ("" names the only input).
        outputs: Blob names to end the graph at (cuts off layers such as PriorBox).
        opset: ONNX opset to write.

    Returns:
        The Model; the batch dimension is the symbolic `batch`.

    Raises:
        GraphfixError: bad or inconsistent files, unsupported layers (all listed at once).
    """
    path = os.fspath(path)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise GraphfixError(
            f"opset {opset} is outside the {MIN_OPSET}..{MAX_OPSET} the Caffe importer writes", kind="usage"
        )
    net = _read_prototxt(path)
    layers = net_layers(net)
    inputs, layers = _inputs(net, layers, input_shape, path)
    weights_path = _find_weights(path, weights, layers)
    files = [path] + ([weights_path] if weights_path else [])
    with SourceHasher("caffe", files) as hasher:  # hashes beside conversion
        caffemodel = read_caffemodel(weights_path) if weights_path else None
        try:
            ir_model = build_graph(layers, inputs, caffemodel, outputs=outputs, opset=opset, path=path)
        except GraphfixError as exc:
            exc.with_path(path)  # errors that name no file are about the prototxt
            raise
        preprocess = _preprocess(net, layers, caffemodel, inputs, path)
        set_metadata(ir_model, preprocess=preprocess)
        model = Model(ir_model, path=path)
        model.defer_metadata(source=hasher)
    return model


def _read_prototxt(path: str) -> Msg:
    if not os.path.isfile(path):
        raise GraphfixError("no such prototxt file", path=path)
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise GraphfixError(f"cannot read file ({exc.strerror})", path=path) from exc
    try:
        net = parse_prototxt(text)
    except PrototxtError as exc:
        raise GraphfixError(f"prototxt syntax error at {exc}", path=path) from exc
    if not net.get("layer") and not net.get("layers"):
        raise GraphfixError("no layers in the prototxt (is this a Caffe deploy file?)", path=path)
    return net


def _inputs(
    net: Msg, layers: list[Layer], override: dict[str, tuple[int, ...]] | None, path: str
) -> tuple[list[NetInput], list[Layer]]:
    """Graph inputs from every declaration form; returns them and the layers left to convert."""
    declared: dict[str, tuple[int, ...] | None] = {}
    names = list(net.input)
    if names:
        if net.input_shape:
            if len(net.input_shape) != len(names):
                raise GraphfixError(f"{len(names)} inputs but {len(net.input_shape)} input_shape entries", path=path)
            for name, shp in zip(names, net.input_shape):
                declared[name] = tuple(int(d) for d in shp.dim)
        elif net.input_dim:
            dims = [int(d) for d in net.input_dim]
            if len(dims) != 4 * len(names):
                raise GraphfixError(
                    f"{len(names)} inputs need {4 * len(names)} input_dim values, got {len(dims)}", path=path
                )
            for i, name in enumerate(names):
                declared[name] = tuple(dims[4 * i : 4 * i + 4])
        else:
            for name in names:
                declared[name] = None
    rest: list[Layer] = []
    has_input_layer = any(lay.type == "Input" for lay in layers)
    for layer in layers:
        if layer.type == "Input":
            shapes = layer.param("input_param").shape
            for i, top in enumerate(layer.tops):
                shp = shapes[i] if i < len(shapes) else (shapes[0] if len(shapes) == 1 else None)
                declared[top] = tuple(int(d) for d in shp.dim) if shp is not None else None
        elif layer.type in DATA_LAYERS and not names and not has_input_layer:
            if layer.tops and layer.tops[0] not in declared:
                declared[layer.tops[0]] = None  # the image blob; labels are dropped
            rest.append(layer)
        else:
            rest.append(layer)
    if not declared:
        raise GraphfixError(
            "the prototxt declares no input (input/input_dim, input_shape or an Input layer)", path=path
        )
    override = dict(override or {})
    if "" in override:
        if len(declared) != 1:
            raise GraphfixError(
                f"the net has {len(declared)} inputs {list(declared)}; name the one to reshape", kind="usage", path=path
            )
        override[next(iter(declared))] = override.pop("")
    unknown = [k for k in override if k not in declared]
    if unknown:
        raise GraphfixError(
            f"input_shape names unknown input(s) {unknown}; inputs: {list(declared)}", kind="usage", path=path
        )
    out = []
    for name, shape in declared.items():
        shape = tuple(override.get(name, shape) or ()) or None
        if shape is None:
            raise GraphfixError(
                f"input {name!r} has no declared shape",
                kind="usage",
                path=path,
                hint="pass input_shape (CLI --input-shape)",
            )
        if any(d <= 0 for d in shape):
            raise GraphfixError(f"input {name!r} has a non-positive dimension {shape}", path=path)
        out.append(NetInput(name, shape))
    return out, rest


def _needs_weights(layers: list[Layer]) -> bool:
    return any(CONVERTERS[lay.type].weights for lay in layers if lay.type in CONVERTERS)


def _find_weights(path: str, weights: str | os.PathLike | None, layers: list[Layer]) -> str | None:
    if weights is not None:
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise GraphfixError("no such caffemodel file", path=weights)
        return weights
    found = sorted(glob.glob(os.path.join(glob.escape(os.path.dirname(os.path.abspath(path))), "*.caffemodel")))
    if len(found) == 1:
        logger.info("using weights %s", found[0])
        return found[0]
    if not found or not _needs_weights(layers):
        return None  # a layer that needs blobs then says so, by name
    raise GraphfixError(
        f"{len(found)} .caffemodel files beside the prototxt", kind="usage", path=path, hint="pick one with --weights"
    )


def _preprocess(
    net: Msg, layers: list[Layer], caffemodel: CaffeModel | None, inputs: list[NetInput], path: str
) -> dict[str, Any]:
    """Caffe defaults: BGR, mean from transform_param (mean_value or mean_file), scale 1.

    The network input is `(pixel - mean) * scale` in BGR order, pixels 0..255.
    """
    transforms = [lay.msg.transform_param for lay in layers if "transform_param" in lay.msg]
    if caffemodel is not None:
        transforms += caffemodel.transform_params
    mean: list[float] | None = None
    scale = 1.0
    mean_source = None
    for t in transforms:
        if "scale" in t:
            scale = float(t.scale)
        if len(t.mean_value):
            mean = [float(v) for v in t.mean_value]
            mean_source = "mean_value"
            break
        if t.mean_file:
            mean_path = t.mean_file if os.path.isabs(t.mean_file) else os.path.join(os.path.dirname(path), t.mean_file)
            if os.path.isfile(mean_path):
                blob = read_binaryproto(mean_path)
                chan = blob.reshape(-1, *blob.shape[-2:]) if blob.ndim >= 2 else blob.reshape(-1, 1, 1)
                mean = [float(v) for v in chan.reshape(chan.shape[0], -1).mean(axis=1, dtype=np.float64)]
                mean_source = f"mean_file {os.path.basename(t.mean_file)} (per-channel average)"
                break
            logger.warning("%s: mean_file %s not found; no mean recorded", path, t.mean_file)
    shape = inputs[0].shape
    pre: dict[str, Any] = {
        "layout": "NCHW",
        "channel_order": "BGR",
        "size": [int(shape[-2]), int(shape[-1])] if len(shape) == 4 else None,
        "mean": mean,
        "std": None,
        "scale": scale,
        "pixel_range": 255,
    }
    if mean_source:
        pre["mean_source"] = mean_source
    return pre
