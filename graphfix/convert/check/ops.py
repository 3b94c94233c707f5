"""C5, C6, C10, C11: which ops, with which attributes, and nothing training-only or control flow.

The TensorRT tables come from onnx/onnx-tensorrt `docs/operators.md` (TensorRT 10.15 revision,
as summarised in the graphfix research note, section 1.2).
"""

from __future__ import annotations

__all__ = ["check_ops", "TRT_UNSUPPORTED", "TRT_RESIZE_COORD_MODES"]

import logging
from collections import defaultdict

import onnx_ir as ir

from graphfix.convert.check._context import CheckContext
from graphfix.convert.check._report import FAIL, INFO, WARN
from graphfix.convert.check.qdq import dequantized_constant
from graphfix.convert.export.passes._util import const_array, input_at
from graphfix.convert.export.passes.noop import dropout_is_training

logger = logging.getLogger(__name__)

#: Ops marked N (not supported) in onnx-tensorrt operators.md for TensorRT 10.15.
TRT_UNSUPPORTED = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
    "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det",
    "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool",
    "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement",
    "OptionalHasElement", "QLinearConv", "QLinearMatMul", "RegexFullMatch", "SequenceAt",
    "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer",
    "StringSplit", "TfIdfVectorizer", "Unique",
})
TRT_RESIZE_COORD_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"})
_TRT_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
_CONTROL_FLOW = ("If", "Loop", "Scan")
_TRAINING_OPS = frozenset({"SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"})
_TOPK_MAX = 3840


def _is_const(value: ir.Value | None) -> bool:
    """A constant, or a constant weight behind a DequantizeLinear (explicit quantization)."""
    return value is None or value.const_value is not None or const_array(value) is not None \
        or dequantized_constant(value)


def check_ops(ctx: CheckContext) -> None:
    """Run C5 (allow-list), C6 (per-op limits), C10 (control flow), C11 (training-only)."""
    if ctx.trt:
        _c5_allow_list(ctx)
    for node in ctx.graph:
        if node.domain not in ("", "ai.onnx"):
            if node.domain == "ai.onnx.preview.training":
                ctx.add("C11", FAIL, f"training op {node.op_type}", "export the inference graph", node=node,
                        rule="training-op")
            continue
        _c6_node(ctx, node)
        _c10_c11_node(ctx, node)


def _c5_allow_list(ctx: CheckContext) -> None:
    import onnx.defs

    bad: dict[str, list[ir.Node]] = defaultdict(list)
    unknown: dict[str, list[ir.Node]] = defaultdict(list)
    for node in ctx.graph:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in TRT_UNSUPPORTED:
            bad[node.op_type].append(node)
        elif not onnx.defs.has(node.op_type):
            unknown[node.op_type].append(node)
    for op, nodes in sorted(bad.items()):
        ctx.add("C5", FAIL, f"{op} is not supported by TensorRT ({len(nodes)} nodes)",
                "replace it with supported ops before export", node=nodes[0], rule="unsupported-op")
    for op, nodes in sorted(unknown.items()):
        ctx.add("C5", FAIL, f"{op} is not an ONNX operator ({len(nodes)} nodes)", "use a standard op",
                node=nodes[0], rule="unknown-op")


def _c6_node(ctx: CheckContext, node: ir.Node) -> None:
    op, attrs, trt = node.op_type, node.attributes, ctx.trt
    if op == "Upsample":
        ctx.add("C6", WARN, "Upsample is deprecated since opset 10", "graphfix export rewrites it as Resize",
                node=node, rule="upsample")
    elif op in ("Softmax", "LogSoftmax", "Hardmax") and ctx.opset < 13:
        x = ctx.inferred().get(node.inputs[0].name) if node.inputs and node.inputs[0] is not None else None
        rank = len(x.shape) if x is not None and x.shape is not None else None
        axis = attrs.get_int("axis", 1)
        if rank is None or (rank > 2 and (axis + rank if axis < 0 else axis) != rank - 1):
            ctx.add("C6", WARN, f"opset-{ctx.opset} {op} on axis {axis} of a rank-{rank} tensor flattens to 2-D "
                    "(opset 13 changed the meaning)", "graphfix export converts it to opset 17 keeping the meaning",
                    node=node, rule="softmax-coercion")
    if not trt:
        return
    if op == "Resize":
        mode = attrs.get_string("coordinate_transformation_mode", "half_pixel")
        if mode not in TRT_RESIZE_COORD_MODES:
            ctx.add("C6", FAIL, f"Resize coordinate_transformation_mode={mode} is not supported by TensorRT",
                    "use half_pixel, pytorch_half_pixel, asymmetric or align_corners", node=node, rule="resize-mode")
        if attrs.get_string("mode", "nearest") not in ("nearest", "linear"):
            ctx.add("C6", WARN, f"Resize mode={attrs.get_string('mode')} (documented: nearest, linear)",
                    "use nearest or linear", node=node, rule="resize-mode")
        if attrs.get_string("mode", "nearest") == "nearest" and \
                attrs.get_string("nearest_mode", "round_prefer_floor") not in _TRT_NEAREST_MODES:
            ctx.add("C6", FAIL, "Resize nearest_mode is not supported by TensorRT", "use floor or round_prefer_floor",
                    node=node, rule="resize-mode")
        if attrs.get_int("antialias", 0):
            ctx.add("C6", FAIL, "Resize antialias=1 is not supported by TensorRT", "set antialias=0", node=node,
                    rule="resize-mode")
        if attrs.get_string("keep_aspect_ratio_policy", "stretch") != "stretch":
            ctx.add("C6", FAIL, "Resize keep_aspect_ratio_policy must be stretch", "compute sizes explicitly",
                    node=node, rule="resize-mode")
    elif op in ("MaxPool", "AveragePool", "LpPool"):
        kernel = attrs.get_ints("kernel_shape", [])
        if len(kernel) not in (1, 2, 3):
            ctx.add("C6", FAIL, f"{op} with a {len(kernel)}-D kernel (TensorRT: 2-D or 3-D)", "use 2-D pooling",
                    node=node, rule="pool-rank")
        if any(d != 1 for d in attrs.get_ints("dilations", [])):
            ctx.add("C6", FAIL, f"{op} with dilations != 1", "remove the dilation", node=node, rule="pool-dilation")
        if op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1] is not None and \
                (node.outputs[1].name or node.outputs[1].uses() or node.outputs[1].is_graph_output()):
            ctx.add("C6", FAIL, "MaxPool Indices output is not supported by TensorRT",
                    "drop the second output (torch: return_indices=False)", node=node, rule="maxpool-indices")
    elif op in ("Conv", "ConvTranspose"):
        if input_at(node, 1) is not None and not _is_const(input_at(node, 1)):
            ctx.add("C6", WARN, f"{op} weights are computed, not an initializer (slow multi-input path)",
                    "fold the weights into an initializer", node=node, rule="conv-weights")
    elif op == "Gemm":
        inferred = ctx.inferred()
        for i in (0, 1):
            v = inferred.get(input_at(node, i).name) if input_at(node, i) is not None else None
            if v is not None and v.shape is not None and len(v.shape) != 2:
                ctx.add("C6", FAIL, f"Gemm input {i} has rank {len(v.shape)} (TensorRT needs 2-D)",
                        "Flatten(axis=1) before the Gemm", node=node, rule="gemm-rank")
            if v is not None and v.dtype in (ir.DataType.INT32, ir.DataType.INT64):
                ctx.add("C6", FAIL, "Gemm on integers is not supported by TensorRT", "use float", node=node,
                        rule="gemm-type")
    elif op == "BatchNormalization":
        if not all(_is_const(input_at(node, i)) for i in range(1, 5)):
            ctx.add("C6", WARN, "BatchNormalization parameters are not all initializers (elementwise fallback)",
                    "make scale/B/mean/var initializers", node=node, rule="bn-params")
    elif op == "Dropout":
        if dropout_is_training(node, ctx.opset) is None:
            ctx.add("C6", FAIL, "Dropout training_mode is computed; TensorRT needs a constant False",
                    "make training_mode a constant False or remove the Dropout", node=node, rule="dropout-mode")
    elif op in ("Squeeze", "Unsqueeze") or op.startswith("Reduce"):
        # axes moved from attribute to input: Squeeze/Unsqueeze/ReduceSum at 13, the other Reduce* at 18
        moved = 13 if op in ("Squeeze", "Unsqueeze", "ReduceSum") else 18
        axes_input = 1 if ctx.opset >= moved else None
        if axes_input is not None and input_at(node, axes_input) is not None and not _is_const(input_at(node, axes_input)):
            ctx.add("C6", FAIL, f"{op} axes are computed; TensorRT needs constant axes", "fold the axes to a constant",
                    node=node, rule="axes-constant")
    elif op in ("Pad", "Slice"):
        index = 3  # Pad(data, pads, value, axes); Slice(data, starts, ends, axes, steps)
        if input_at(node, index) is not None and not _is_const(input_at(node, index)):
            ctx.add("C6", WARN, f"{op} axes are computed (TensorRT < 10.4 needs constant axes)",
                    "fold the axes to a constant", node=node, rule="axes-constant")
    elif op == "TopK":
        k = const_array(input_at(node, 1))
        if input_at(node, 1) is not None and k is None:
            ctx.add("C6", WARN, "TopK K is computed (older TensorRT needs an initializer)", "make K a constant",
                    node=node, rule="topk-k")
        elif k is not None and k.size and int(k.reshape(-1)[0]) >= _TOPK_MAX:
            ctx.add("C6", FAIL, f"TopK K={int(k.reshape(-1)[0])} >= {_TOPK_MAX}", "use a smaller K", node=node,
                    rule="topk-k")
    elif op == "Clip":
        if not all(_is_const(v) for v in (input_at(node, 1), input_at(node, 2)) if v is not None):
            ctx.add("C6", WARN, "Clip min/max are computed (elementwise fallback)", "make them constants",
                    node=node, rule="clip-constant")
    elif op == "Einsum":
        equation = node.attributes["equation"].as_string() if "equation" in node.attributes else ""
        if any(not (c.islower() or c in ",->.") for c in equation):
            ctx.add("C6", FAIL, f"Einsum equation {equation!r} has uppercase labels or spaces (TensorRT refuses it)",
                    "graphfix export rewrites it to lowercase labels", node=node, rule="einsum-equation")
    elif op == "CumSum":
        if input_at(node, 1) is not None and not _is_const(input_at(node, 1)):
            ctx.add("C6", FAIL, "CumSum axis must be an initializer", "make it a constant", node=node, rule="axes-constant")


def _c10_c11_node(ctx: CheckContext, node: ir.Node) -> None:
    op = node.op_type
    if op in _CONTROL_FLOW:
        ctx.add("C10", WARN, f"{op} control flow in a classifier", "fold it (constant condition) or re-export "
                "without data-dependent branches", node=node, rule="control-flow")
    if op in _TRAINING_OPS:
        ctx.add("C11", FAIL, f"{op} is a training-only loss", "export the inference graph", node=node,
                rule="training-op")
    elif op == "Dropout":
        training = dropout_is_training(node, ctx.opset)
        if training:
            ctx.add("C11", FAIL, "Dropout in training mode", "export in eval mode (model.eval())", node=node,
                    rule="dropout-training")
        elif training is False:
            ctx.add("C11", WARN, "inference Dropout left in the graph", "graphfix export removes it", node=node,
                    rule="dropout-inference")
    elif op == "Identity":
        ctx.add("C11", INFO, "Identity left in the graph", "graphfix export removes it", node=node, rule="identity")
    elif op == "BatchNormalization":
        used = [o for o in node.outputs[1:] if o is not None and (o.uses() or o.is_graph_output())]
        if node.attributes.get_int("training_mode", 0) or used:
            ctx.add("C11", FAIL, "BatchNormalization in training mode (running statistics outputs)",
                    "export in eval mode", node=node, rule="bn-training")
