"""C14: fp16 in the graph done right, and an activation-range probe on sample inputs."""

from __future__ import annotations

__all__ = ["check_fp16", "probe_activations"]

import logging
from typing import Any

import numpy as np
import onnx_ir as ir

from graphfix.convert.check._context import CheckContext
from graphfix.convert.check._report import FAIL, INFO, WARN
from graphfix.irutil import input_at

logger = logging.getLogger(__name__)

FP16_MAX = 65504.0
#: Models with more weights than this are not probed (the probe runs every tensor as an output).
PROBE_LIMIT = 1 << 30
_HEAD = "graphfix_head"
_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16)


def check_fp16(ctx: CheckContext) -> None:
    """C14 checks on the graph, then the activation probe when the model holds fp16 or inputs are given."""
    graph = ctx.graph
    half_inits = [v for v in graph.initializers.values() if v.dtype == ir.DataType.FLOAT16]
    half_values = [o for n in graph for o in n.outputs if o.dtype == ir.DataType.FLOAT16]
    is_half = bool(half_inits or half_values)
    if is_half:
        for value in [*graph.inputs, *graph.outputs]:
            if value.dtype == ir.DataType.FLOAT16:
                ctx.add("C14", WARN, f"graph I/O {value.name} is float16", "keep fp32 inputs/outputs (Cast inside)",
                        node=value.name, rule="fp16-io")
        saturated, nonfinite, clamp_1e4 = [], [], []
        for value in half_inits:
            array = value.const_value.numpy().astype(np.float32)
            if array.size == 0:
                continue
            if not np.all(np.isfinite(array)):
                nonfinite.append(value.name)
            elif np.max(np.abs(array)) >= FP16_MAX:
                saturated.append(value.name)
            elif np.count_nonzero(np.abs(array) == 1e4) > 1 and np.max(np.abs(array)) == 1e4:
                clamp_1e4.append(value.name)
        if nonfinite:
            ctx.add("C14", FAIL, f"fp16 weights hold inf/nan: {', '.join(nonfinite[:3])}",
                    "keep those nodes fp32 (graphfix export does)", node=nonfinite[0], rule="fp16-weights")
        if saturated:
            ctx.add("C14", WARN, f"fp16 weights saturated at 65504: {', '.join(saturated[:3])}",
                    "keep those nodes fp32", node=saturated[0], rule="fp16-weights")
        if clamp_1e4:
            ctx.add("C14", WARN, f"fp16 weights clamped at 1e4 (onnxconverter-common default): {', '.join(clamp_1e4[:3])}",
                    "convert with max_finite_val=65504 (graphfix export --fp16)", node=clamp_1e4[0], rule="fp16-1e4")
        for node in graph:
            if node.op_type == "Resize" and input_at(node, 2) is not None \
                    and input_at(node, 2).dtype == ir.DataType.FLOAT16:
                ctx.add("C14", FAIL, "Resize scales are float16 (invalid ONNX)", "keep Resize in fp32", node=node,
                        rule="fp16-resize")
            if node.name == _HEAD and any(v is not None and v.dtype == ir.DataType.FLOAT16 for v in node.inputs):
                ctx.add("C14", WARN, "the multi-label head runs in fp16 (sigmoid saturates near 1)",
                        "keep graphfix_head and its Sigmoid fp32", node=node, rule="fp16-head")
    if is_half or ctx.sample_inputs is not None:
        probe_activations(ctx, is_half)


def probe_activations(ctx: CheckContext, is_half: bool) -> dict[str, Any] | None:
    """Run the model with every float tensor as an output; flag values beyond the fp16 range."""
    from graphfix.convert.export._parity import random_feeds
    from graphfix.model import Model

    if ctx.weight_bytes() > PROBE_LIMIT or ctx.is_external():
        ctx.add("C14", INFO, "activation probe skipped for a model over 1 GB", "", rule="probe-skipped")
        return None
    clone = ctx.clone()
    inferred = ctx.inferred()
    outputs = {v.name for v in clone.graph.outputs}
    for node in clone.graph:
        for out in node.outputs:
            info = inferred.get(out.name)
            dtype = out.dtype or (info.dtype if info is not None else None)
            if out.name and out.name not in outputs and dtype in _FLOATS and node.op_type != "Constant":
                out.type = ir.TensorType(dtype)  # a new type: clones share type objects
                clone.graph.outputs.append(out)
                outputs.add(out.name)
    probe_model = Model(clone)
    feeds_list = [random_feeds(ctx.model, batch=2, seed=0)]
    if ctx.sample_inputs is not None:
        sets = ctx.sample_inputs if isinstance(ctx.sample_inputs, (list, tuple)) else [ctx.sample_inputs]
        feeds_list += [dict(s) for s in sets]
    peak, where, nonfinite = 0.0, None, []
    try:
        for feeds in feeds_list:
            results = probe_model.run(feeds)
            for name, array in results.items():
                array = np.asarray(array)
                if array.dtype.kind != "f" or array.size == 0 or (is_half and array.dtype != np.float16):
                    continue  # in an fp16 model only fp16 tensors can overflow (fp32 ones were kept so)
                finite = np.isfinite(array)
                if not finite.all():
                    nonfinite.append(name)
                m = float(np.max(np.abs(array[finite]))) if finite.any() else 0.0
                if m > peak:
                    peak, where = m, name
    except Exception as exc:  # the probe is advisory
        ctx.add("C14", INFO, f"activation probe could not run: {str(exc).splitlines()[0][:200]}", "", rule="probe-skipped")
        return None
    probe = {"tensors": len(outputs), "runs": len(feeds_list), "max_abs": peak, "tensor": where,
             "nonfinite": sorted(set(nonfinite))[:10]}
    ctx.probe = probe  # type: ignore[attr-defined]
    if nonfinite or peak > FP16_MAX:
        severity = FAIL if is_half else WARN
        what = f"non-finite values in {nonfinite[0]}" if nonfinite else f"|x| up to {peak:.4g} in {where}"
        fix = "keep the overflowing layers fp32 or rescale inputs" if is_half else "do not export this model with --fp16"
        ctx.add("C14", severity, f"activations exceed the fp16 range: {what}", fix, node=where, rule="fp16-range")
    elif peak > FP16_MAX / 8:
        ctx.add("C14", WARN, f"activations reach {peak:.4g} in {where} (fp16 max 65504)",
                "check the input scaling before using fp16", node=where, rule="fp16-range")
    return probe
