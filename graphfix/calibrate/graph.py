"""Graph edits of the calibrate stage: head weights, probability op, the `labels` output.

All functions edit the onnx-ir graph of a Model in place; the public API calls them on a fresh
`model.copy()` only.

1. `set_head`: new `graphfix_head.weight` / `.bias` initializers (shape kept [L, F] / [L]).
2. `set_probability_op`: the node producing `probabilities` becomes Sigmoid or Softmax(axis=1).
3. `remove_labels_output`: drops a previous `labels` output, its nodes and `graphfix_thresholds`.
4. `add_labels_output`: `labels` [N, L] bool = GreaterOrEqual(probabilities, graphfix_thresholds)
   (Not(Less(...)) below opset 12), OR-ed with "is the row maximum" (ReduceMax + Equal) when at
   least one label per image is kept.
"""

from __future__ import annotations

__all__ = ["set_head", "set_probability_op", "remove_labels_output", "add_labels_output", "THRESHOLDS_NAME"]

import logging

import numpy as np
import onnx_ir as ir

from graphfix.calibrate.features import find_head_gemm
from graphfix.errors import GraphfixError
from graphfix.model import Model

logger = logging.getLogger(__name__)

#: Initializer holding the thresholds, read by the `labels` output.
THRESHOLDS_NAME = "graphfix_thresholds"
#: Prefix of the nodes that compute `labels`.
LABELS_NODE = "graphfix_labels"
#: ReduceMax axes initializer (opset >= 18 only).
AXES_NAME = "graphfix_labels_axes"


def _output(model: Model, name: str) -> ir.Value:
    for v in model.ir.graph.outputs:
        if v.name == name:
            return v
    raise GraphfixError(f"the model has no {name!r} output", kind="no_head", path=model.path, hint="run `graphfix swap-head` first")


def set_head(model: Model, weight: np.ndarray, bias: np.ndarray) -> None:
    """Replace the head's weight [L, F] and bias [L] (the Gemm keeps transB=1)."""
    gemm = find_head_gemm(model)
    w_val, b_val = gemm.inputs[1], gemm.inputs[2] if len(gemm.inputs) > 2 else None
    trans_b = gemm.attributes.get("transB")
    data = weight if trans_b is not None and trans_b.as_int() == 1 else weight.T
    w_val.const_value = ir.tensor(np.ascontiguousarray(data, np.float32), name=w_val.name)
    w_val.shape = ir.Shape(data.shape)
    if b_val is None:
        raise GraphfixError("the head Gemm has no bias input", kind="no_head", path=model.path)
    b_val.const_value = ir.tensor(np.ascontiguousarray(bias, np.float32), name=b_val.name)
    b_val.shape = ir.Shape(bias.shape)


def set_probability_op(model: Model, op: str) -> None:
    """Make `probabilities` = Sigmoid(logits) or Softmax(logits, axis=1)."""
    node = _output(model, "probabilities").producer()
    if node is None or node.op_type not in ("Sigmoid", "Softmax"):
        raise GraphfixError("`probabilities` is not produced by Sigmoid or Softmax", kind="no_head", path=model.path)
    if node.op_type == op:
        return
    node.op_type = op
    node.attributes.clear()
    if op == "Softmax":
        node.attributes["axis"] = ir.AttrInt64("axis", 1)


def remove_labels_output(model: Model) -> bool:
    """Drop the `labels` output and what computes it; True if there was one."""
    graph = model.ir.graph
    outs = [v for v in graph.outputs if v.name == "labels"]
    for v in outs:
        graph.outputs.remove(v)
    nodes = [n for n in graph if n.name and n.name.startswith(LABELS_NODE)]
    if nodes:
        graph.remove(nodes, safe=True)
    graph.initializers.pop(THRESHOLDS_NAME, None)
    graph.initializers.pop(AXES_NAME, None)
    return bool(outs or nodes)


def add_labels_output(model: Model, thresholds: np.ndarray, *, at_least_one: bool = False) -> None:
    """Add `labels` [N, L] bool (see module docstring)."""
    remove_labels_output(model)
    graph = model.ir.graph
    probs = _output(model, "probabilities")
    n_cls = len(thresholds)
    thr = ir.Value(
        name=THRESHOLDS_NAME, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([n_cls]),
        const_value=ir.tensor(np.asarray(thresholds, np.float32), name=THRESHOLDS_NAME),
    )
    graph.register_initializer(thr)
    batch = probs.shape[0] if probs.shape is not None and len(probs.shape) == 2 else ir.SymbolicDim("N")
    labels = ir.Value(name="labels", type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([batch, n_cls]))
    if model.opset < 12:  # GreaterOrEqual arrived in opset 12: Not(Less) is the same for numbers
        less = ir.node("Less", [probs, thr], name=f"{LABELS_NODE}_lt")
        less.outputs[0].name = f"{LABELS_NODE}_lt_out"
        graph.append(less)
        ge = ir.node("Not", [less.outputs[0]], outputs=None if at_least_one else [labels],
                     name=f"{LABELS_NODE}_ge" if at_least_one else LABELS_NODE)
    else:
        ge = ir.node("GreaterOrEqual", [probs, thr], outputs=None if at_least_one else [labels],
                     name=f"{LABELS_NODE}_ge" if at_least_one else LABELS_NODE)
    graph.append(ge)
    if at_least_one:
        if model.opset >= 18:  # axes became an input in opset 18
            axes = ir.Value(
                name=AXES_NAME, type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape([1]),
                const_value=ir.tensor(np.array([1], np.int64), name=AXES_NAME),
            )
            graph.register_initializer(axes)
            top = ir.node("ReduceMax", [probs, axes], {"keepdims": 1}, name=f"{LABELS_NODE}_max")
        else:
            top = ir.node("ReduceMax", [probs], {"axes": [1], "keepdims": 1}, name=f"{LABELS_NODE}_max")
        is_top = ir.node("Equal", [probs, top.outputs[0]], name=f"{LABELS_NODE}_top")
        final = ir.node("Or", [ge.outputs[0], is_top.outputs[0]], outputs=[labels], name=LABELS_NODE)
        for node in (top, is_top, final):
            graph.append(node)
        ge.outputs[0].name = f"{LABELS_NODE}_ge_out"
        top.outputs[0].name = f"{LABELS_NODE}_max_out"
        is_top.outputs[0].name = f"{LABELS_NODE}_top_out"
    graph.outputs.append(labels)
