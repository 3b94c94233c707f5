"""Head replacement: the softmax head becomes Gemm(F->L) + Sigmoid.

`swap_head` works on a clone of the model, so its input is never changed. Cases:

1. Gemm / MatMul+Add classifier: the new Gemm reads the classifier's input [N, F].
2. Conv classifier (1x1 Conv [-> Relu] -> GlobalAveragePool, or a 1x1 Conv on pooled features):
   GlobalAveragePool + Flatten are inserted on the features before the new Gemm.
3. `features=NAME`: the new head reads that tensor (pooled first when it is 4-D); every
   output computed from it is replaced.

The old head's nodes, initializers and training-only inputs are removed, outputs `logits`
and `probabilities` take the old output's place, the batch dimension stays symbolic, shapes
are inferred, and graphfix metadata records labels and how the head was made.
"""

from __future__ import annotations

__all__ = ["swap_head", "NEW_HEAD", "LOGITS", "PROBABILITIES", "head_gemm"]

import logging
import os
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass, TopologicalSortPass

from graphfix._version import __version__
from graphfix.errors import GraphfixError
from graphfix.model import Model, set_metadata
from graphfix.irutil import const_array, fresh_name, graph_names
from graphfix.surgery.head import Located, locate_head
from graphfix.surgery.labels import read_init_map, resolve_labels

logger = logging.getLogger(__name__)

#: Name of the new Gemm node; its initializers are NEW_HEAD + ".weight" / ".bias".
NEW_HEAD = "graphfix_head"
LOGITS = "logits"
PROBABILITIES = "probabilities"


def head_gemm(model: Model) -> ir.Node:
    """The graphfix head Gemm of a swapped model (the node reading `graphfix_head.weight`)."""
    weight = model.ir.graph.initializers.get(f"{NEW_HEAD}.weight")
    if weight is None or not weight.uses():
        raise GraphfixError(
            "model has no graphfix head; run swap-head first", kind="usage", path=model.path
        )
    return weight.uses()[0].node


def _glorot(num_labels: int, num_features: int, seed: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (num_features + num_labels))
    rng = np.random.default_rng(seed)
    return rng.uniform(-limit, limit, size=(num_labels, num_features)).astype(np.float32)


def _old_classifier(loc: Located, path: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The old classifier as W [K, F] and b [K] (float32), whatever its layout."""
    kind = loc.head.kind
    nodes = loc.classifier
    if kind == "gemm":
        node = nodes[0]
        w = const_array(node.inputs[1]).astype(np.float32)
        if not (node.attributes.get("transB") is not None and node.attributes["transB"].as_int()):
            w = w.T
        alpha = node.attributes["alpha"].as_float() if "alpha" in node.attributes else 1.0
        beta = node.attributes["beta"].as_float() if "beta" in node.attributes else 1.0
        c = const_array(node.inputs[2]) if len(node.inputs) > 2 else None
        b = np.zeros(w.shape[0], np.float32) if c is None else np.broadcast_to(c.astype(np.float32).reshape(-1), (w.shape[0],))
        return alpha * w, beta * b
    if kind == "matmul_add":
        mm, add = nodes
        w = const_array(mm.inputs[1]).astype(np.float32).T
        bias_in = add.inputs[1] if add.inputs[0] is mm.outputs[0] else add.inputs[0]
        return w, const_array(bias_in).astype(np.float32).reshape(-1)
    if kind == "conv":
        conv = nodes[0]
        w = const_array(conv.inputs[1]).astype(np.float32)
        b = const_array(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
        return w.reshape(w.shape[0], -1), (np.zeros(w.shape[0], np.float32) if b is None else b.astype(np.float32))
    raise GraphfixError("--init-from-old needs a linear classifier; --features has none", kind="usage", path=path)


def _initial_weights(
    loc: Located, names: list[str], seed: int, init_from_old: Any, path: str | None
) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    w = _glorot(len(names), loc.head.num_features, seed)
    b = np.zeros(len(names), np.float32)
    mapping: dict[int, int] = {}
    if init_from_old is not None:
        old_w, old_b = _old_classifier(loc, path)
        if old_w.shape[1] != loc.head.num_features:
            raise GraphfixError(
                f"old classifier reads {old_w.shape[1]} features, the new head {loc.head.num_features}",
                kind="usage", path=path,
            )
        mapping = read_init_map(init_from_old, names, old_w.shape[0])
        for new, old in sorted(mapping.items()):
            w[new] = old_w[old]
            b[new] = old_b[old]
    return w, b, mapping


def _free_reserved_names(graph: ir.Graph, reserved: list[str]) -> None:
    """Rename existing values or nodes that use a name the new head needs."""
    taken = graph_names(graph)
    for node in graph:
        if node.name in reserved:
            node.name = fresh_name(taken, f"{node.name}.orig")
        for out in node.outputs:
            if out.name in reserved:
                out.name = fresh_name(taken, f"{out.name}.orig")
    for value in list(graph.inputs) + list(graph.initializers.values()):
        if value.name in reserved:
            old = value.name
            value.name = fresh_name(taken, f"{old}.orig")
            if old in graph.initializers:
                graph.initializers.pop(old)
                graph.register_initializer(value)


def swap_head(
    model: Model,
    labels: int | list[str] = 20,
    label_names: list[str] | None = None,
    seed: int = 0,
    *,
    features: str | None = None,
    init_from_old: str | os.PathLike | dict | None = None,
) -> Model:
    """Replace the softmax head with a new multi-label head: Gemm(F->L) + Sigmoid.

    Args:
        model: The source model (unchanged).
        labels: The label count L, or the list of L label names.
        label_names: Names when `labels` is a count.
        seed: Seed of the Glorot-uniform weight initialisation (bias starts at zero).
        features: Tensor the new head reads, overriding head finding.
        init_from_old: Map of new label -> old class index (dict, JSON or text file); those
            rows start as copies of the old classifier's rows.

    Returns:
        A new Model with outputs `logits` [N, L] and `probabilities` [N, L].
    """
    names = resolve_labels(labels, label_names)
    work = model.copy()
    loc = locate_head(work, features=features)
    graph = work.ir.graph
    head = loc.head
    weight, bias, mapping = _initial_weights(loc, names, seed, init_from_old, model.path)
    reserved = [LOGITS, PROBABILITIES, NEW_HEAD, f"{NEW_HEAD}.weight", f"{NEW_HEAD}.bias",
                f"{NEW_HEAD}.sigmoid", f"{NEW_HEAD}.pool", f"{NEW_HEAD}.flatten",
                f"{NEW_HEAD}.pooled", f"{NEW_HEAD}.features"]
    _free_reserved_names(graph, reserved)

    # Inputs that only the old head read (e.g. MXNet softmax_label) go with it.
    used_inputs = [v for v in graph.inputs if v.uses()]

    feat = loc.features
    batch = feat.shape[0] if feat.shape is not None and len(feat.shape) > 0 else ir.SymbolicDim("batch")
    if isinstance(batch, int) and batch != 1:
        logger.info("features have a fixed batch of %d", batch)
    new_nodes: list[ir.Node] = []
    x = feat
    if head.needs_pooling:
        pool = ir.node("GlobalAveragePool", [x], name=f"{NEW_HEAD}.pool")
        pool.outputs[0].name = f"{NEW_HEAD}.pooled"
        flat = ir.node("Flatten", [pool.outputs[0]], attributes={"axis": 1}, name=f"{NEW_HEAD}.flatten")
        flat.outputs[0].name = f"{NEW_HEAD}.features"
        flat.outputs[0].dtype = ir.DataType.FLOAT
        flat.outputs[0].shape = ir.Shape([batch, head.num_features])
        new_nodes += [pool, flat]
        x = flat.outputs[0]
    w_val = ir.Value(name=f"{NEW_HEAD}.weight", const_value=ir.tensor(weight, name=f"{NEW_HEAD}.weight"))
    b_val = ir.Value(name=f"{NEW_HEAD}.bias", const_value=ir.tensor(bias, name=f"{NEW_HEAD}.bias"))
    for v in (w_val, b_val):
        v.dtype = ir.DataType.FLOAT
        v.shape = ir.Shape(v.const_value.shape)
        graph.register_initializer(v)
    gemm = ir.node("Gemm", [x, w_val, b_val], attributes={"transB": 1}, name=NEW_HEAD)
    sigmoid = ir.node("Sigmoid", [gemm.outputs[0]], name=f"{NEW_HEAD}.sigmoid")
    new_nodes += [gemm, sigmoid]
    for value, name in ((gemm.outputs[0], LOGITS), (sigmoid.outputs[0], PROBABILITIES)):
        value.name = name
        value.dtype = ir.DataType.FLOAT
        value.shape = ir.Shape([batch, len(names)])
    graph.extend(new_nodes)

    old_outputs = set(loc.outputs)
    position = min(i for i, o in enumerate(graph.outputs) if o in old_outputs)
    kept = [o for o in graph.outputs if o not in old_outputs]
    graph.outputs.clear()
    graph.outputs.extend(kept[:position] + [gemm.outputs[0], sigmoid.outputs[0]] + kept[position:])

    RemoveUnusedNodesPass()(work.ir)
    dropped_inputs = [v.name for v in used_inputs if not v.uses()]
    for v in used_inputs:
        if not v.uses():
            graph.inputs.remove(v)
            if v.name in graph.initializers:
                graph.initializers.pop(v.name)
    TopologicalSortPass()(work.ir)
    ShapeInferencePass(strict_mode=False)(work.ir)

    set_metadata(
        work.ir,
        labels=names,
        thresholds=None,
        version=__version__,
        head={
            "features": head.features,
            "num_features": head.num_features,
            "num_labels": len(names),
            "init": "glorot_uniform" + (f"+old_rows({len(mapping)})" if mapping else ""),
            "seed": seed,
            "replaced": head.removed,
            "old_kind": head.kind,
            "old_classes": head.num_classes,
            "dropped_inputs": dropped_inputs,
        },
    )
    logger.info(
        "swapped head: %s (%s, %d features) -> %d labels; removed %s",
        head.kind, head.features, head.num_features, len(names), ", ".join(head.removed),
    )
    return work
