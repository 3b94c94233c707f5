"""Graph edits of the calibrate stage: head weights, probability op, the `labels` output.

All functions edit the onnx-ir graph of a Model in place; the public API calls them on a fresh
`model.copy()` only.

1. `set_head`: new `graphfix_head.weight` / `.bias` initializers (shape kept [L, F] / [L]).
2. `set_probability_op`: the node producing `probabilities` becomes Sigmoid or Softmax(axis=1).
3. `remove_labels_output`: drops a previous `labels` output, its nodes and `graphfix_thresholds`.
4. `add_labels_output`: `labels` [N, L] bool = GreaterOrEqual(probabilities, graphfix_thresholds)
   (Not(Less(...)) below opset 12), OR-ed with "is the row maximum" (ReduceMax + Equal) when at
   least one label per image is kept.
5. `set_count_head` / `remove_count_head`: the `label_count` [N] output = Exp(Gemm(features,
   `graphfix_count.weight` [1, F], `graphfix_count.bias` [1])), a Poisson mean of the number of
   labels, beside the class head on the same features.
6. `add_rank_labels_output`: `labels` = the top k per row by `probabilities` (ties at the k-th
   score all kept): k fixed (`--decision topk`) or k = clip(floor(label_count + 0.5), 1, L)
   (`--decision count`): TopK (sorted values) + Gather / GatherElements of the k-th value +
   GreaterOrEqual. Needs opset >= 11.
"""

from __future__ import annotations

__all__ = [
    "set_head", "set_probability_op", "remove_labels_output", "add_labels_output", "set_count_head",
    "remove_count_head", "add_rank_labels_output", "THRESHOLDS_NAME", "COUNT_NAME",
]

import logging

import numpy as np
import onnx_ir as ir

from graphfix.data.features import find_head_gemm
from graphfix.errors import GraphfixError
from graphfix.model import Model

logger = logging.getLogger(__name__)

#: Initializer holding the thresholds, read by the `labels` output.
THRESHOLDS_NAME = "graphfix_thresholds"
#: Prefix of the nodes that compute `labels`.
LABELS_NODE = "graphfix_labels"
#: ReduceMax axes initializer (opset >= 18 only).
AXES_NAME = "graphfix_labels_axes"
#: Prefix of the label-count head's nodes and initializers; its output is `label_count`.
COUNT_NAME = "graphfix_count"
COUNT_OUTPUT = "label_count"


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
    for name in [k for k in graph.initializers if k.startswith((THRESHOLDS_NAME, AXES_NAME, LABELS_NODE))]:
        graph.initializers.pop(name)
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


def _const(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, type=ir.TensorType(ir.DataType.from_numpy(array.dtype)), shape=ir.Shape(array.shape),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def _append(graph: ir.Graph, op: str, inputs: list, name: str, attributes: dict | None = None) -> ir.Value:
    node = ir.node(op, inputs, attributes or {}, name=name)
    node.outputs[0].name = f"{name}_out"
    graph.append(node)
    return node.outputs[0]


def remove_count_head(model: Model) -> bool:
    """Drop the `label_count` output, its nodes and initializers; True if there was one."""
    graph = model.ir.graph
    outs = [v for v in graph.outputs if v.name == COUNT_OUTPUT]
    for v in outs:
        graph.outputs.remove(v)
    nodes = [n for n in graph if n.name and n.name.startswith(COUNT_NAME)]
    if nodes:
        graph.remove(nodes, safe=True)
    for name in [k for k in graph.initializers if k.startswith(COUNT_NAME)]:
        graph.initializers.pop(name)
    return bool(outs or nodes)


def set_count_head(model: Model, weight: np.ndarray, bias: float) -> None:
    """Add (or replace) `label_count` [N] = Exp(features . weight + bias) (see module docstring)."""
    remove_count_head(model)
    graph = model.ir.graph
    features = find_head_gemm(model).inputs[0]
    w = _const(graph, f"{COUNT_NAME}.weight", np.asarray(weight, np.float32).reshape(1, -1))
    b = _const(graph, f"{COUNT_NAME}.bias", np.asarray([bias], np.float32))
    eta = _append(graph, "Gemm", [features, w, b], f"{COUNT_NAME}_gemm", {"transB": 1})
    rate = _append(graph, "Exp", [eta], f"{COUNT_NAME}_exp")
    shape = _const(graph, f"{COUNT_NAME}.shape", np.array([-1], np.int64))
    probs = _output(model, "probabilities")
    batch = probs.shape[0] if probs.shape is not None and len(probs.shape) == 2 else ir.SymbolicDim("N")
    out = ir.Value(name=COUNT_OUTPUT, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([batch]))
    graph.append(ir.node("Reshape", [rate, shape], outputs=[out], name=f"{COUNT_NAME}_reshape"))
    graph.outputs.append(out)


def add_rank_labels_output(model: Model, *, top_k: int | None = None) -> None:
    """`labels` = the top `top_k` per row, or the top round(label_count) when `top_k` is None."""
    if model.opset < 11:
        raise GraphfixError(
            f"top-k and count decisions in the graph need opset >= 11 (the model has {model.opset})",
            kind="usage", path=model.path, hint="graphfix export --opset 17 first",
        )
    remove_labels_output(model)
    graph = model.ir.graph
    probs = _output(model, "probabilities")
    n_cls = find_head_gemm(model).inputs[1].shape[0] if find_head_gemm(model).inputs[1].shape else None
    if n_cls is None:
        raise GraphfixError("the head weight has no shape", kind="no_head", path=model.path)
    n_cls = int(n_cls)
    k_all = _const(graph, f"{LABELS_NODE}_k_all", np.array([n_cls], np.int64))
    topk = ir.node("TopK", [probs, k_all], {"axis": 1, "largest": 1, "sorted": 1}, name=f"{LABELS_NODE}_sort", num_outputs=2)
    topk.outputs[0].name = f"{LABELS_NODE}_sort_out"
    topk.outputs[1].name = f"{LABELS_NODE}_sort_idx"
    graph.append(topk)
    ordered = topk.outputs[0]
    if top_k is not None:
        k = min(max(int(top_k), 1), n_cls)
        idx = _const(graph, f"{LABELS_NODE}_kth_index", np.array([k - 1], np.int64))
        kth = _append(graph, "Gather", [ordered, idx], f"{LABELS_NODE}_kth", {"axis": 1})
    else:
        rate = next(n for n in graph if n.name == f"{COUNT_NAME}_exp").outputs[0]  # [N, 1]
        half = _const(graph, f"{LABELS_NODE}_half", np.array([0.5], np.float32))
        one = _const(graph, f"{LABELS_NODE}_one", np.array([1.0], np.float32))
        top = _const(graph, f"{LABELS_NODE}_n_classes", np.array([float(n_cls)], np.float32))
        k = _append(graph, "Floor", [_append(graph, "Add", [rate, half], f"{LABELS_NODE}_k_half")], f"{LABELS_NODE}_k_round")
        k = _append(graph, "Max", [k, one], f"{LABELS_NODE}_k_min")
        k = _append(graph, "Min", [k, top], f"{LABELS_NODE}_k_max")
        k = _append(graph, "Sub", [k, one], f"{LABELS_NODE}_k_index")
        idx = _append(graph, "Cast", [k], f"{LABELS_NODE}_k_int", {"to": int(ir.DataType.INT64)})
        kth = _append(graph, "GatherElements", [ordered, idx], f"{LABELS_NODE}_kth", {"axis": 1})
    batch = probs.shape[0] if probs.shape is not None and len(probs.shape) == 2 else ir.SymbolicDim("N")
    labels = ir.Value(name="labels", type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([batch, n_cls]))
    if model.opset < 12:  # GreaterOrEqual arrived in opset 12
        less = _append(graph, "Less", [probs, kth], f"{LABELS_NODE}_lt")
        graph.append(ir.node("Not", [less], outputs=[labels], name=LABELS_NODE))
    else:
        graph.append(ir.node("GreaterOrEqual", [probs, kth], outputs=[labels], name=LABELS_NODE))
    graph.outputs.append(labels)
