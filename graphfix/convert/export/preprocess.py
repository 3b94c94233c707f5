"""Bake graphfix's image preprocessing into the graph: the model then takes raw uint8 images.

`bake_preprocess(model, layout="nhwc")` puts these nodes in front of the model's only input
(the new input is always named `image`; a tensor or node already called so is renamed
`image_original` inside the graph), in the order `graphfix.data.images.Preprocess.apply` computes them (so float32 results
are bit-identical):

    image uint8 [N,H,W,C] (or [N,C,H,W]), channels in RGB order (grey for 1-channel models)
      -> Cast(float32) -> Transpose(0,3,1,2) (NHWC only)
      -> Resize(linear) to the model's H,W (only with `resize_from`)
      -> Gather(axis=1, [2,1,0]) (models that want BGR)
      -> Mul(pixel_range/255) -> Sub(mean) -> Mul(scale) -> Div(std)   (identities skipped)
      -> the old input's readers

`resize_from=(h, w)` fixes the image size the client sends and resizes it in the graph to the
model's input size: ONNX Resize, mode linear, coordinate_transformation_mode half_pixel, no
antialiasing. When enlarging that is Pillow's bilinear resampling (graphfix's own) within one
uint8 level (Pillow computes in fixed point and rounds to uint8); when shrinking Pillow also low-pass filters, so resize on the client
for results equal to `graphfix predict`.

`verify_baked` runs the baked model on seeded random images and the unbaked one on the same
images preprocessed by graphfix, and returns the max abs difference per output.
"""

from __future__ import annotations

__all__ = ["bake_preprocess", "verify_baked", "random_images", "LAYOUTS", "IMAGE_INPUT"]

from typing import Any

import numpy as np
import onnx_ir as ir

from graphfix.errors import GraphfixError
from graphfix.irutil import fresh_name, graph_names
from graphfix.model import Model

#: Image layouts the baked input can take.
LAYOUTS = ("nhwc", "nchw")
#: Name of the baked uint8 input.
IMAGE_INPUT = "image"
#: Prefix of the nodes and initializers this module adds.
PREFIX = "graphfix_pre"


def bake_preprocess(
    model: Model,
    *,
    layout: str = "nhwc",
    resize_from: tuple[int, int] | None = None,
    preprocess: Any = None,
) -> Model:
    """A new Model whose input `image` is a uint8 image batch; `model` is not changed.

    The preprocessing is the model's stored `graphfix.preprocess` (with its input shape), so the
    baked graph computes what every graphfix command computes for that model.

    Args:
        model: A model with one float NCHW input of static C, H, W.
        layout: "nhwc" ([N, H, W, C], what image decoders give) or "nchw".
        resize_from: (H, W) of the images the client sends; the graph resizes them to the
            model's input size (see module docstring for the interpolation). None: the images
            come at the model's input size.
        preprocess: A `Preprocess` for the Python API; default (and what the CLI uses)
            `Preprocess.for_model(model)`, the stored values.

    Raises:
        GraphfixError: kind "usage" for a bad layout or size, when the model's preprocessing
            is already baked, or when a graph output is named `image`; kind "not_ready" for a model whose input is not one float NCHW
            image tensor.
    """
    from graphfix.data.images import Preprocess

    layout = layout.lower()
    if layout not in LAYOUTS:
        raise GraphfixError(f"unknown layout {layout!r}", kind="usage", hint="nhwc or nchw")
    if (model.preprocess or {}).get("baked"):
        raise GraphfixError("the model's preprocessing is already in the graph", kind="usage", path=model.path)
    prep = preprocess if preprocess is not None else Preprocess.for_model(model)
    work = model.copy()
    graph = work.ir.graph
    old = _image_input(work, prep)
    batch, channels = old.shape[0], old.shape[1]
    height, width = prep.size
    if resize_from is not None:
        if len(resize_from) != 2 or min(resize_from) < 1:
            raise GraphfixError(f"bad resize size {resize_from}", kind="usage", hint="H,W of the images sent")
        if work.opset < 11:
            raise GraphfixError(f"a baked resize needs opset >= 11 (the model has {work.opset})", kind="usage",
                                path=model.path, hint="export with --opset 17 first, then bake")
    in_h, in_w = resize_from if resize_from is not None else (height, width)
    dims = [batch, in_h, in_w, channels] if layout == "nhwc" else [batch, channels, in_h, in_w]
    taken = graph_names(graph)
    _free_name(work, taken, IMAGE_INPUT)
    taken.add(IMAGE_INPUT)
    image = ir.Value(name=IMAGE_INPUT, type=ir.TensorType(ir.DataType.UINT8), shape=ir.Shape(dims))
    builder = _Builder(graph, taken)

    x = builder.node("Cast", [image], {"to": ir.DataType.FLOAT}, "cast")
    if layout == "nhwc":
        x = builder.node("Transpose", [x], {"perm": [0, 3, 1, 2]}, "nchw")
    if resize_from is not None and (in_h, in_w) != (height, width):
        x = _resize(builder, x, (height, width), (in_h, in_w), work.opset)
    if channels == 3 and prep.channel_order == "BGR":
        x = builder.node("Gather", [x, builder.const(np.array([2, 1, 0], np.int64), "bgr")], {"axis": 1}, "bgr")
    if prep.pixel_range != 255.0:
        x = builder.node("Mul", [x, builder.const(np.float32(prep.pixel_range / 255.0), "range")], {}, "range")
    mean = np.asarray(prep.mean, np.float32)
    if mean.any():
        x = builder.node("Sub", [x, builder.const(mean.reshape(1, -1, 1, 1), "mean")], {}, "mean")
    if np.float32(prep.scale) != 1:
        x = builder.node("Mul", [x, builder.const(np.float32(prep.scale), "scale")], {}, "scale")
    std = np.asarray(prep.std, np.float32)
    if (std != 1).any():
        x = builder.node("Div", [x, builder.const(std.reshape(1, -1, 1, 1), "std")], {}, "std")

    old.replace_all_uses_with(x)
    index = list(graph.inputs).index(old)
    graph.inputs.pop(index)
    graph.inputs.insert(index, image)
    graph.insert_before(graph.node(0), builder.nodes)
    baked = {
        "input": image.name, "dtype": "uint8", "layout": layout.upper(), "channel_order": "RGB" if channels == 3 else "L",
        "size": [in_h, in_w], "resize": None if resize_from is None or (in_h, in_w) == (height, width)
        else "linear, half_pixel, no antialias",
    }
    # "layout" tells graphfix's own image loader (NCHW float only) that this model is not for it
    meta = {**(model.preprocess or {}), **prep.to_dict(), "layout": layout.upper(), "baked": baked}
    return work.with_metadata(preprocess=meta)


def random_images(model: Model, *, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Seeded random uint8 images shaped like a baked model's `image` input (batch `batch`)."""
    value = _baked_input(model)
    shape = [d if isinstance(d, int) else batch for d in value.shape]
    shape[0] = batch
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def verify_baked(original: Model, baked: Model, images: np.ndarray | None = None) -> dict[str, Any]:
    """Max abs differences between `baked(images)` and `original(graphfix preprocessing of images)`.

    Args:
        original: The model before `bake_preprocess`.
        baked: Its baked form (also after export, as long as the outputs are named the same).
        images: uint8 images in the baked layout; default `random_images(baked)`.

    Returns:
        `{"ok", "images", "outputs": {name: {"max_abs_diff", "max_abs_ref", "tolerance", "ok"}}}`
        with the fp32 export tolerance (1e-5 x max(1, max |ref|)); integer and bool outputs
        count mismatching entries instead. With an in-graph resize the figures are reported
        and "ok" is None: Pillow's resize is not the same computation.
    """
    from PIL import Image

    from graphfix.data.images import Preprocess
    from graphfix.convert.export._parity import FP32_RTOL

    info = baked.preprocess["baked"]
    images = random_images(baked) if images is None else images
    prep = Preprocess.for_model(original, **{k: v for k, v in baked.preprocess.items() if k in _PREP_KEYS})
    hwc = images if info["layout"] == "NHWC" else images.transpose(0, 2, 3, 1)
    pil = [Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img) for img in hwc]
    x = np.stack([prep.apply(img) for img in pil])
    names = [n for n in baked.output_names if n in set(original.output_names)]
    ref = original.run(x, outputs=names)
    got = baked.run({info["input"]: images}, outputs=names)
    outputs = {}
    for name in names:
        a, b = np.asarray(ref[name]), np.asarray(got[name])
        if not np.issubdtype(a.dtype, np.floating):
            mism = int(np.count_nonzero(a != b))
            outputs[name] = {"mismatches": mism, "ok": mism == 0}
            continue
        ref_max = float(np.abs(a).max()) if a.size else 0.0
        diff = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
        tol = FP32_RTOL * max(1.0, ref_max)
        outputs[name] = {"max_abs_diff": diff, "max_abs_ref": ref_max, "tolerance": tol, "ok": diff <= tol}
    if info["resize"]:  # Pillow's resize (uint8 rounding, antialiasing) is not the graph's
        for fig in outputs.values():
            fig["ok"] = None
        return {"ok": None, "images": list(images.shape), "outputs": outputs}
    return {"ok": all(o["ok"] for o in outputs.values()), "images": list(images.shape), "outputs": outputs}


_PREP_KEYS = ("size", "channel_order", "mean", "std", "scale", "pixel_range")


class _Builder:
    """Collects the new nodes and initializers under one name prefix."""

    def __init__(self, graph: ir.Graph, taken: set[str]) -> None:
        self.graph, self.taken, self.nodes = graph, taken, []

    def const(self, array: np.ndarray, what: str) -> ir.Value:
        name = fresh_name(self.taken, f"{PREFIX}.{what}")
        array = np.asarray(array)
        value = ir.Value(name=name, type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         shape=ir.Shape(array.shape), const_value=ir.tensor(array, name=name))
        self.graph.register_initializer(value)
        return value

    def node(self, op: str, inputs: list[ir.Value | None], attrs: dict[str, Any], what: str) -> ir.Value:
        node = ir.node(op, inputs, attrs, name=fresh_name(self.taken, f"{PREFIX}_{what}"))
        node.outputs[0].name = fresh_name(self.taken, f"{PREFIX}_{what}_out")
        self.nodes.append(node)
        return node.outputs[0]


def _resize(builder: _Builder, x: ir.Value, size: tuple[int, int], in_size: tuple[int, int], opset: int) -> ir.Value:
    """Resize NCHW `x` from `in_size` to `size` with constant scales (no shape subgraph)."""
    scales = np.array([1.0, 1.0, *(_scale(o, i) for o, i in zip(size, in_size))], np.float32)
    roi = None if opset >= 13 else builder.const(np.zeros(0, np.float32), "roi")  # optional from opset 13
    attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    return builder.node("Resize", [x, roi, builder.const(scales, "scales")], attrs, "resize")


def _scale(out: int, size: int) -> np.float32:
    """The float32 scale whose floor(size * scale) is `out` in float32 and float64 arithmetic."""
    s = np.float32(out / size)
    for _ in range(64):  # one or two steps in practice
        if int(np.float32(size) * s) == out and int(size * float(s)) == out:
            return s
        s = np.nextafter(s, np.float32(np.inf) if int(size * float(s)) < out else np.float32(0))
    raise GraphfixError(f"no float32 resize scale maps {size} to {out}", kind="usage")


def _free_name(model: Model, taken: set[str], name: str) -> None:
    """Rename whatever is called `name` in the main graph (the old input, a tensor, an
    initializer, a node) so the baked input can take that name; a graph output keeps its name."""
    graph = model.ir.graph
    if name in {v.name for v in graph.outputs}:
        raise GraphfixError(f"the model has an output named {name!r}, the name of the baked input", kind="usage",
                            path=model.path, hint="rename that output first")
    values = [*graph.inputs, *graph.initializers.values(), *(o for node in graph for o in node.outputs)]
    for value in values:
        if value.name == name:
            value.name = fresh_name(taken, f"{name}_original")
    for node in graph:
        if node.name == name:
            node.name = fresh_name(taken, f"{name}_original")


def _image_input(model: Model, prep: Any) -> ir.Value:
    """The model's one float NCHW input with static C, H, W matching `prep`."""
    graph = model.ir.graph
    inputs = [v for v in graph.inputs if not v.is_initializer()]
    if len(inputs) != 1:
        raise GraphfixError(f"preprocessing can be baked only into a model with one input (it has {len(inputs)})",
                            kind="usage", path=model.path)
    value = inputs[0]
    shape = list(value.shape) if value.shape is not None else []
    if value.dtype != ir.DataType.FLOAT or len(shape) != 4:
        raise GraphfixError(f"input {value.name} is not a float [N,C,H,W] image tensor", kind="usage",
                            path=model.path)
    c, h, w = shape[1:]
    if not all(isinstance(d, int) for d in (c, h, w)):
        raise GraphfixError(f"input {value.name} has a symbolic C, H or W {shape}", kind="usage", path=model.path,
                            hint="fix it when loading: --input-shape NAME:1,3,224,224")
    if c != prep.channels or (h, w) != tuple(prep.size):
        raise GraphfixError(
            f"input {value.name} is [{c},{h},{w}] but the preprocessing gives [{prep.channels},{prep.size[0]},{prep.size[1]}]",
            kind="usage", path=model.path, hint="fix graphfix.preprocess size or the input shape",
        )
    return value


def _baked_input(model: Model) -> ir.Value:
    info = (model.preprocess or {}).get("baked")
    if not info:
        raise GraphfixError("the model has no baked preprocessing", kind="usage", path=model.path)
    for value in model.ir.graph.inputs:
        if value.name == info["input"]:
            return value
    raise GraphfixError(f"the baked input {info['input']!r} is missing", kind="usage", path=model.path)
