"""`--verify`: run the source framework and the converted model on one seeded input.

References: MXNet (when `mxnet` is importable) for symbol JSON, OpenCV DNN (when `cv2` has
`dnn.readNetFromCaffe`) for Caffe, and onnxruntime on the source file for ONNX. Without the
framework the result says "not verified" (ok = None) rather than pretending. Tolerance:
max abs diff <= 1e-4 x max(1, max|reference|) on every output.
"""

from __future__ import annotations

__all__ = ["verify"]

import logging
import os
from typing import Any

import numpy as np

from graphfix.model import Model

logger = logging.getLogger(__name__)

RTOL = 1e-4


def _input_shapes(model: Model, batch: int = 1) -> dict[str, list[int]] | str:
    shapes = {}
    for value in model.ir.graph.inputs:
        if value.name in model.ir.graph.initializers:
            continue
        if value.shape is None:
            return f"input {value.name!r} has no shape"
        dims = [d if isinstance(d, int) else None for d in value.shape]
        if any(d is None for d in dims[1:]):
            return f"input {value.name!r} has symbolic dims beyond the batch"
        shapes[value.name] = [batch, *dims[1:]]
    return shapes


def _compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], reference: str) -> dict[str, Any]:
    diffs, ok = {}, True
    for name, r in ref.items():
        g = got[name]
        if r.shape != g.shape and r.size == g.size:
            r = r.reshape(g.shape)
        if r.shape != g.shape:
            diffs[name] = None
            ok = False
            continue
        diff = float(np.max(np.abs(r.astype(np.float64) - g))) if r.size else 0.0
        diffs[name] = diff
        ok &= diff <= RTOL * max(1.0, float(np.max(np.abs(r))) if r.size else 1.0)
    worst = max((d for d in diffs.values() if d is not None), default=0.0)
    return {
        "ok": bool(ok),
        "reference": reference,
        "max_abs_diff": diffs,
        "tolerance": f"{RTOL:g} x max(1, max|ref|)",
        "summary": f"{'ok' if ok else 'MISMATCH'} against {reference}: max abs diff {worst:.3g} over {len(diffs)} outputs",
    }


def _not_verified(why: str) -> dict[str, Any]:
    return {"ok": None, "reference": None, "max_abs_diff": {}, "summary": f"not verified: {why}"}


def _verify_caffe(path: str, model: Model, weights: str | None, feeds: dict[str, np.ndarray], ours: dict[str, np.ndarray]) -> dict[str, Any]:
    try:
        import cv2
    except ImportError:
        return _not_verified("OpenCV (cv2) is not importable")
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        return _not_verified(f"OpenCV {cv2.__version__} has no dnn.readNetFromCaffe")
    if weights is None:
        sources = model.metadata.get("source", {}).get("files", {})
        names = [n for n in sources if n.endswith(".caffemodel")]
        weights = os.path.join(os.path.dirname(path), names[0]) if names else None
    if weights is None:
        return _not_verified("caffemodel not known")
    net = cv2.dnn.readNetFromCaffe(path, weights)
    for name, x in feeds.items():
        net.setInput(x, name)
    names = list(ours)
    if not set(names) <= set(net.getLayerNames()):
        # an output blob written in place keeps the blob name in ONNX; OpenCV names its layer
        unconnected = list(net.getUnconnectedOutLayersNames())
        if len(unconnected) != len(names):
            return _not_verified(f"OpenCV outputs {unconnected} do not pair with {names}")
        outs = net.forward(unconnected)
    else:
        outs = net.forward(names)
    return _compare(dict(zip(names, outs)), ours, f"OpenCV DNN {cv2.__version__}")


def _verify_mxnet(path: str, model: Model, params: str | None, feeds: dict[str, np.ndarray], ours: dict[str, np.ndarray]) -> dict[str, Any]:
    try:
        import mxnet as mx
    except Exception:
        return _not_verified("mxnet is not importable")
    if params is None:
        sources = model.metadata.get("source", {}).get("files", {})
        names = [n for n in sources if n.endswith(".params")]
        params = os.path.join(os.path.dirname(path), names[0]) if names else None
    if params is None:
        return _not_verified("params file not known")
    sym = mx.sym.load(path)
    saved = mx.nd.load(params)
    args = {k.split(":", 1)[1]: v for k, v in saved.items() if k.startswith("arg:")}
    auxs = {k.split(":", 1)[1]: v for k, v in saved.items() if k.startswith("aux:")}
    exe = sym.simple_bind(ctx=mx.cpu(), grad_req="null", **{k: v.shape for k, v in feeds.items()})
    for name, arr in exe.arg_dict.items():
        if name in feeds:
            arr[:] = feeds[name]
        elif name in args:
            arr[:] = args[name]
    for name, arr in exe.aux_dict.items():
        if name in auxs:
            arr[:] = auxs[name]
    outs = [o.asnumpy() for o in exe.forward(is_train=False)]
    names = list(ours)
    return _compare(dict(zip(names, outs)), ours, f"mxnet {mx.__version__}")


def _verify_onnx(path: str, feeds: dict[str, np.ndarray], ours: dict[str, np.ndarray]) -> dict[str, Any]:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs() if o.name in ours]
    return _compare(dict(zip(names, sess.run(names, feeds))), {n: ours[n] for n in names}, f"onnxruntime {ort.__version__} on the source")


def verify(path: str, model: Model, *, params: str | None = None, weights: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Compare `model` (converted from `path`) with the source framework on a seeded input.

    Returns:
        {"ok": True/False, or None when not verified, "reference", "max_abs_diff": {output: diff},
        "tolerance", "summary"}.
    """
    from graphfix.convert import detect_format

    shapes = _input_shapes(model)
    if isinstance(shapes, str):
        return _not_verified(shapes)
    rng = np.random.default_rng(seed)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    ours = model.run(feeds)
    fmt = detect_format(path)
    try:
        if fmt == "caffe":
            return _verify_caffe(path, model, weights, feeds, ours)
        if fmt == "mxnet":
            return _verify_mxnet(path, model, params, feeds, ours)
        return _verify_onnx(path, feeds, ours)
    except Exception as exc:  # the reference framework itself failed on this model
        logger.debug("reference run failed", exc_info=True)
        return _not_verified(f"the reference framework failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
