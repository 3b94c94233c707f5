"""C17: the explicit-quantization rules TensorRT applies to Q/DQ graphs (QuantizeLinear / DequantizeLinear).

A graph without QuantizeLinear/DequantizeLinear gets no finding here (unless its metadata says
`graphfix.int8`). On a Q/DQ graph each rule that breaks is one FAIL line naming the node:

1. qdq-constant: scale and zero point are build-time constants (initializers / Constant nodes).
2. qdq-scale: scales are float, positive and finite; a scalar (per-tensor) or a 1-D tensor
   (per-channel), or same-rank with `block_size` (block quantization, weights only).
3. qdq-zero-point: zero points are all 0 (TensorRT quantizes symmetrically only).
4. qdq-type: the quantized type is INT8 (FLOAT8E4M3FN: WARN, needs TensorRT 10 on an sm_89+ GPU;
   INT4: weights only). UINT8 (also a QuantizeLinear with no zero point before opset 21, which
   ONNX defines as uint8) and INT32 (onnxruntime's quantized biases) are refused by TensorRT's
   parser ("only activation types allowed as input to this layer").
5. qdq-opset: per-channel scales need opset >= 13 (the `axis` attribute came with opset 13).
6. qdq-pairing: a QuantizeLinear output reaches only DequantizeLinear nodes, through at most the
   data-movement ops TensorRT takes INT8 for (`BETWEEN_QDQ`), and is never a graph output; a
   DequantizeLinear reads a QuantizeLinear output (through those ops) or a constant weight.
7. qdq-per-channel: per-channel quantization only on constants (weights), on the consumer's
   output-channel axis (Conv weight axis 0, ConvTranspose axis 1, Gemm B axis 0 with transB=1
   else 1, MatMul B the last axis; biases axis 0), with one scale per channel; activations are
   per-tensor.
8. qdq-head (WARN): the multi-label head (graphfix_head Gemm + Sigmoid) has int8 weights or
   quantized logits/probabilities: its thresholds were fitted on fp32 scores.
An INFO line `qdq-summary` counts the Q/DQ nodes and says how TensorRT builds such a graph.

Sources: TensorRT developer guide, "Working with Quantized Types" > "Explicit Quantization"
(TensorRT 10/11: symmetric scheme, per-tensor activations, per-channel weights, build with strong
typing, no calibrator); the IQuantizeLayer/IDequantizeLayer API reference ("zeroPt must only
contain zero-valued coefficients", "All scale coefficients must have strictly positive values",
scale scalar / 1-D / block); onnx-tensorrt `QuantDequantLinearHelper` (per-channel assumed to be
KCRS weights, scale count = output channels, UINT8 refused) and `docs/operators.md` (the INT8
column of the data-movement ops); onnx/onnx-tensorrt#850 and microsoft/onnxruntime#14229 (int32
bias DequantizeLinear from `quantize_static` fails to parse).
"""

from __future__ import annotations

__all__ = ["check_qdq", "has_qdq", "dequantized_constant", "BETWEEN_QDQ", "QDQ_OPS"]

import logging

import numpy as np
import onnx_ir as ir

from graphfix.convert.check._context import CheckContext
from graphfix.convert.check._report import FAIL, INFO, WARN
from graphfix.irutil import const_array, input_at, is_constant

logger = logging.getLogger(__name__)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
#: Ops that may sit between a QuantizeLinear and its DequantizeLinear: data movement that
#: TensorRT runs on INT8 (onnx-tensorrt operators.md INT8 column) and that commutes with the scale.
BETWEEN_QDQ = frozenset({"Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather",
                         "Concat", "MaxPool"})
_HEAD, _SIGMOID = "graphfix_head", "graphfix_sigmoid"
_FIX_BIAS = "keep biases fp32 (onnxruntime quantize_static: extra_options QuantizeBias=False)"


def _is_qdq(node: ir.Node) -> bool:
    return node.op_type in QDQ_OPS and node.domain in ("", "ai.onnx")


def has_qdq(graph: ir.Graph) -> bool:
    """True when the graph holds a QuantizeLinear or DequantizeLinear node."""
    return any(_is_qdq(n) for n in graph)


def _weight(value: ir.Value | None) -> bool:
    """A constant, or a constant put through QuantizeLinear (onnxruntime's AddQDQPairToWeight)."""
    if is_constant(value):
        return True
    producer = value.producer() if value is not None else None
    return producer is not None and producer.op_type == "QuantizeLinear" and is_constant(input_at(producer, 0))


def dequantized_constant(value: ir.Value | None) -> bool:
    """True when `value` is a DequantizeLinear of a constant weight (TensorRT folds it into the layer)."""
    producer = value.producer() if value is not None else None
    return producer is not None and producer.op_type == "DequantizeLinear" and _weight(input_at(producer, 0))


def _shape(value: ir.Value | None, ctx: CheckContext) -> list | None:
    if value is None:
        return None
    if value.const_value is not None:
        return list(value.const_value.shape)
    shape = value.shape
    if shape is None and value.name:
        info = ctx.inferred().get(value.name)
        shape = info.shape if info is not None else None
    return list(shape) if shape is not None else None


def _dtype(value: ir.Value | None, ctx: CheckContext) -> ir.DataType | None:
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.dtype
    if value.dtype is not None:
        return value.dtype
    info = ctx.inferred().get(value.name) if value.name else None
    return info.dtype if info is not None else None


def _quantized_type(node: ir.Node, ctx: CheckContext) -> ir.DataType | None:
    """The integer (or fp8) type a QuantizeLinear writes / a DequantizeLinear reads."""
    if node.op_type == "DequantizeLinear":
        return _dtype(input_at(node, 0), ctx) or _dtype(input_at(node, 2), ctx)
    out = node.attributes.get_int("output_dtype", 0)
    if out:
        try:
            return ir.DataType(out)
        except ValueError:
            return None  # not a type: onnx.checker (C1) reports it
    zero_point = input_at(node, 2)
    return _dtype(zero_point, ctx) if zero_point is not None else ir.DataType.UINT8


def check_qdq(ctx: CheckContext) -> None:
    """C17 on every Q/DQ node (see the module docstring); nothing on a graph without them."""
    nodes = [n for n in ctx.graph if _is_qdq(n)]
    if not nodes:
        if "graphfix.int8" in ctx.model.ir.metadata_props:
            ctx.add("C17", WARN, "metadata says graphfix.int8 but the graph holds no QuantizeLinear/DequantizeLinear",
                    "re-export with --int8 (the int8 graph was lost)", rule="qdq-metadata")
        return
    for node in nodes:
        _params(ctx, node)
        _per_channel(ctx, node)
        if node.op_type == "QuantizeLinear":
            _pairing_from_q(ctx, node)
        else:
            _pairing_into_dq(ctx, node)
    _head(ctx)
    n_q = sum(1 for n in nodes if n.op_type == "QuantizeLinear")
    ctx.add("C17", INFO, f"explicit quantization: {n_q} QuantizeLinear, {len(nodes) - n_q} DequantizeLinear; "
            "TensorRT builds it strongly typed, no calibration table", "", rule="qdq-summary")


def _params(ctx: CheckContext, node: ir.Node) -> None:
    """qdq-constant, qdq-scale, qdq-zero-point, qdq-type, qdq-opset for one Q/DQ node."""
    op = node.op_type
    scale, zero_point = input_at(node, 1), input_at(node, 2)
    block = node.attributes.get_int("block_size", 0)
    for what, value in (("scale", scale), ("zero point", zero_point)):
        if value is not None and not is_constant(value):
            ctx.add("C17", FAIL, f"{op} {what} is computed, not a constant", "make it an initializer",
                    node=node, rule="qdq-constant")
    scales = const_array(scale) if scale is not None else None
    if scales is not None:
        if scales.dtype.kind != "f":
            ctx.add("C17", FAIL, f"{op} scale is {scales.dtype} (a float scale is needed)", "store the scale as float32",
                    node=node, rule="qdq-scale")
        elif not np.all(np.isfinite(scales) & (scales > 0)):
            flat = scales.reshape(-1)
            bad = flat[~(np.isfinite(flat) & (flat > 0))]
            ctx.add("C17", FAIL, f"{op} scale holds {float(bad[0])} (scales must be positive and finite)",
                    "recalibrate: a zero, negative or non-finite scale cannot quantize", node=node, rule="qdq-scale")
        if scales.ndim > 1 and not block:
            ctx.add("C17", FAIL, f"{op} scale has rank {scales.ndim} (TensorRT: a scalar or a 1-D per-channel scale)",
                    "use a per-tensor or per-channel scale", node=node, rule="qdq-scale")
        if scales.size > 1 and ctx.opset < 13:
            ctx.add("C17", FAIL, f"per-channel {op} at opset {ctx.opset} (the axis attribute needs opset 13)",
                    "export at opset 13 or later (graphfix writes 17)", node=node, rule="qdq-opset")
    zeros = const_array(zero_point) if zero_point is not None else None
    if zeros is not None and np.any(zeros.astype(np.float64) != 0):
        first = zeros.reshape(-1)[np.flatnonzero(zeros.reshape(-1).astype(np.float64))[0]]
        ctx.add("C17", FAIL, f"{op} zero point is {first.item()}, not 0 (TensorRT quantizes symmetrically only)",
                "quantize symmetrically (ActivationSymmetric / WeightSymmetric=True)", node=node,
                rule="qdq-zero-point")
    _type(ctx, node)


def _type(ctx: CheckContext, node: ir.Node) -> None:
    op, qtype = node.op_type, _quantized_type(node, ctx)
    source = input_at(node, 0).producer() if input_at(node, 0) is not None else None
    if op == "DequantizeLinear" and source is not None and source.op_type == "QuantizeLinear":
        return  # the QuantizeLinear reports its own type
    weight = op == "DequantizeLinear" and _weight(input_at(node, 0)) or \
        op == "QuantizeLinear" and is_constant(input_at(node, 0))
    if qtype is None or qtype == ir.DataType.INT8:
        return
    if qtype == ir.DataType.FLOAT8E4M3FN:
        ctx.add("C17", WARN, f"{op} quantizes to FP8 (E4M3)", "FP8 needs TensorRT 10 and an sm_89+ GPU (Ada, Hopper); "
                "use INT8 elsewhere", node=node, rule="qdq-type")
    elif qtype == ir.DataType.INT4 and weight:
        ctx.add("C17", WARN, f"{op} holds INT4 weights", "INT4 is weight-only and needs TensorRT 10 block quantization",
                node=node, rule="qdq-type")
    elif qtype == ir.DataType.INT32 and op == "DequantizeLinear":
        ctx.add("C17", FAIL, "DequantizeLinear of an INT32 tensor (a quantized bias): TensorRT takes only "
                "INT8/FP8/INT4 into a DequantizeLinear", _FIX_BIAS, node=node, rule="qdq-type")
    elif qtype == ir.DataType.UINT8 and op == "QuantizeLinear" and input_at(node, 2) is None:
        ctx.add("C17", FAIL, "QuantizeLinear without a zero point quantizes to UINT8 (ONNX default; negatives "
                "clamp to 0)", "give an INT8 zero point of 0", node=node, rule="qdq-type")
    else:
        ctx.add("C17", FAIL, f"{op} quantizes to {qtype.name} (TensorRT: INT8, FP8 E4M3 or INT4 weights)",
                "quantize to signed INT8 (QuantType.QInt8)", node=node, rule="qdq-type")


def _per_channel(ctx: CheckContext, node: ir.Node) -> None:
    """qdq-per-channel: per-channel only on weights, on the consumer's output-channel axis."""
    scale = input_at(node, 1)
    scales = const_array(scale) if scale is not None else None
    if scales is None or scales.size <= 1 or ctx.opset < 13:
        return  # below opset 13 there is no axis: qdq-opset says so
    data = input_at(node, 0)
    weight = _weight(data) if node.op_type == "DequantizeLinear" else is_constant(data)
    if not weight:
        ctx.add("C17", FAIL, f"per-channel {node.op_type} on an activation ({scales.size} scales; TensorRT "
                "quantizes activations per-tensor)", "use one scale for activations", node=node, rule="qdq-per-channel")
        return
    if node.attributes.get_int("block_size", 0):
        return
    shape = _shape(data, ctx)
    rank = len(shape) if shape is not None else None
    axis = node.attributes.get_int("axis", 1)
    if rank is not None and axis < 0:
        axis += rank
    if shape is not None and 0 <= axis < rank and isinstance(shape[axis], int) and shape[axis] != scales.size:
        ctx.add("C17", FAIL, f"{scales.size} scales for axis {axis} of size {shape[axis]}", "one scale per channel",
                node=node, rule="qdq-per-channel")
    if node.op_type != "DequantizeLinear" or rank is None:
        return
    for consumer, index, axes in _consumers(node.outputs[0], list(range(rank))):
        expected = _output_channel_axis(consumer, index, len(axes))
        if expected is None:
            ctx.add("C17", WARN, f"per-channel weights feed {consumer.op_type} {consumer.name!r} (input {index}); "
                    "TensorRT expects them on Conv/ConvTranspose/Gemm/MatMul weights", "quantize this tensor per-tensor",
                    node=node, rule="qdq-per-channel")
        elif expected < len(axes) and axes[expected] != axis:
            via = f" (axis {axes.index(axis)} after the Transpose)" if axes != sorted(axes) and axis in axes else ""
            ctx.add("C17", FAIL, f"per-channel axis {axis}{via} for {consumer.op_type} {consumer.name!r} input {index} "
                    f"(its output-channel axis is {expected})", f"quantize along axis {axes[expected]}", node=node,
                    rule="qdq-per-channel")


def _consumers(value: ir.Value, axes: list[int]) -> list[tuple[ir.Node, int, list[int]]]:
    """(node, input index, axes) using `value`, looking through Identity and Transpose.

    `axes[j]` is the axis of the quantized tensor that is axis j of what `node` reads.
    """
    found = []
    for use in value.uses():
        node, index = use.node, use.idx
        if node.op_type == "Identity":
            found += _consumers(node.outputs[0], axes)
        elif node.op_type == "Transpose" and index == 0:
            perm = node.attributes.get_ints("perm", list(range(len(axes)))[::-1])
            if sorted(perm) == list(range(len(axes))):
                found += _consumers(node.outputs[0], [axes[p] for p in perm])
            else:
                found.append((node, index, axes))
        else:
            found.append((node, index, axes))
    return found


def _output_channel_axis(node: ir.Node, index: int, rank: int) -> int | None:
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        return {1: 0 if op == "Conv" else 1, 2: 0}.get(index)
    if op == "Gemm":
        if index == 1:
            return 0 if node.attributes.get_int("transB", 0) else 1
        return rank - 1 if index == 2 else None
    if op == "MatMul" and index == 1:
        return rank - 1
    return None


def _pairing_from_q(ctx: CheckContext, node: ir.Node) -> None:
    """qdq-pairing: the int8 output of a QuantizeLinear reaches only DequantizeLinear nodes."""
    stack, seen = [node.outputs[0]], set()
    while stack:
        value = stack.pop()
        if value.is_graph_output():
            ctx.add("C17", FAIL, f"the quantized tensor {value.name!r} is a graph output (a QuantizeLinear must "
                    "feed a DequantizeLinear)", "add a DequantizeLinear before the output", node=node, rule="qdq-pairing")
        for use in value.uses():
            consumer = use.node
            if id(consumer) in seen:
                continue
            seen.add(id(consumer))
            if consumer.op_type == "DequantizeLinear" and use.idx == 0:
                continue
            if consumer.op_type in BETWEEN_QDQ and use.idx == 0 or consumer.op_type == "Concat":
                stack.append(consumer.outputs[0])  # the data output (MaxPool's second one is indices)
                continue
            ctx.add("C17", FAIL, f"{consumer.op_type} {consumer.name!r} reads the quantized output of {node.name!r} "
                    f"(between Q and DQ only {', '.join(sorted(BETWEEN_QDQ))})",
                    "put a DequantizeLinear before it", node=node, rule="qdq-pairing")


def _pairing_into_dq(ctx: CheckContext, node: ir.Node) -> None:
    """qdq-pairing: a DequantizeLinear reads a constant or a QuantizeLinear output (through BETWEEN_QDQ).

    An op that reads a QuantizeLinear output directly was already named by `_pairing_from_q`.
    """
    value = input_at(node, 0)
    while value is not None and not _weight(value):
        producer = value.producer()
        if producer is not None and producer.op_type == "QuantizeLinear":
            return
        if producer is not None and producer.op_type in BETWEEN_QDQ:
            value = input_at(producer, 0)
            continue
        if producer is not None and any(v is not None and v.producer() is not None
                                        and v.producer().op_type == "QuantizeLinear" for v in producer.inputs):
            return
        what = f"{producer.op_type} {producer.name!r}" if producer is not None else f"graph input {value.name!r}"
        ctx.add("C17", FAIL, f"DequantizeLinear reads {what}, not a QuantizeLinear output or a constant weight",
                "pair every DequantizeLinear with a QuantizeLinear", node=node, rule="qdq-pairing")
        return


def _head(ctx: CheckContext) -> None:
    """qdq-head: the head's weights and scores stay fp32 (its thresholds were fitted on fp32 scores).

    Quantized features going into the head are fine: the head still computes and outputs fp32.
    """
    for node in ctx.graph:
        if node.name not in (_HEAD, _SIGMOID):
            continue
        weights = node.name == _HEAD and any(dequantized_constant(v) for v in node.inputs[1:])
        scores = any(u.node.op_type == "QuantizeLinear" for o in node.outputs if o is not None for u in o.uses())
        if weights or scores:
            what = "its weights are int8" if weights else f"{node.outputs[0].name} is quantized"
            ctx.add("C17", WARN, f"the multi-label head is quantized ({what}; the thresholds were fitted on fp32 "
                    "scores)", "keep graphfix_head and graphfix_sigmoid fp32 (quantize_static nodes_to_exclude)",
                    node=node, rule="qdq-head")
            return
