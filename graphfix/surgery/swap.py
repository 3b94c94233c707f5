"""Head replacement: the softmax head becomes Gemm(F->L) + Sigmoid.

`swap_head` works on a clone of the model, so its input is never changed. Cases:

1. Gemm / MatMul+Add classifier: the new Gemm reads the classifier's input [N, F].
2. Conv classifier (1x1 Conv [-> Relu] -> GlobalAveragePool, or a 1x1 Conv on pooled features):
   GlobalAveragePool + Flatten are inserted on the features before the new Gemm.
3. `features=NAME`: the new head reads that tensor (pooled first when it is 4-D); every
   output computed from it is replaced.

The old head's nodes, initializers and training-only inputs are removed, outputs `logits`
and `probabilities` take the old output's place, the batch dimension stays symbolic, shapes
are inferred, and graphfix metadata records labels and how the head was made. On a model that
already has a graphfix head, that head's state goes with it: `graphfix.training`,
`graphfix.calibration` and `graphfix.thresholds` are removed (the new head is untrained) and
`graphfix.head` names what was dropped (`dropped_state`).
"""

from __future__ import annotations

__all__ = ["swap_head", "NEW_HEAD", "LOGITS", "PROBABILITIES", "STATE_KEYS", "head_gemm"]

import logging
import os
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass, TopologicalSortPass

from graphfix._version import __version__
from graphfix.errors import GraphfixError
from graphfix.model import META_PREFIX, Model, set_metadata
from graphfix.irutil import fresh_name, graph_names
from graphfix.surgery.head import Located, locate_head
from graphfix.surgery.labels import read_init_map, resolve_labels

logger = logging.getLogger(__name__)

#: Name of the new Gemm node; its initializers are NEW_HEAD + ".weight" / ".bias".
NEW_HEAD = "graphfix_head"
LOGITS = "logits"
PROBABILITIES = "probabilities"
#: graphfix metadata that describes a trained or calibrated head; a new head drops it.
STATE_KEYS = ("training", "calibration", "thresholds")


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


def _initial_weights(
    loc: Located, names: list[str], seed: int, init_from_old: Any, path: str | None
) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    w = _glorot(len(names), loc.head.num_features, seed)
    b = np.zeros(len(names), np.float32)
    mapping: dict[int, int] = {}
    if init_from_old is not None:
        if loc.old_weight is None:
            raise GraphfixError("--init-from-old needs a linear classifier; --features has none",
                                kind="usage", path=path)
        old_w, old_b = loc.old_weight, loc.old_bias
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


def _annotated_values(graph: ir.Graph) -> set[str]:
    """Names of the intermediate values the source annotated (value_info with a type or shape)."""
    return {v.name for node in graph for v in node.outputs if v.type is not None or v.shape is not None}


def _keep_source_annotations(graph: ir.Graph, annotated: set[str]) -> None:
    """Drop the inferred type and shape of every backbone value the source left unannotated.

    onnxruntime fuses differently when value_info is added (ViT, CoAtNet: features then differ
    by ~1e-6 at ORT_ENABLE_ALL), so the backbone keeps exactly the source's annotations; only
    the new head's values and the graph outputs carry inferred ones.
    """
    for node in graph:
        if (node.name or "").startswith(NEW_HEAD):
            continue
        for value in node.outputs:
            if value.name not in annotated and not value.is_graph_output():
                value.type = None
                value.shape = None


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
    annotated = _annotated_values(work.ir.graph)
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
    _keep_source_annotations(work.ir.graph, annotated)

    # metadata_props, not `model.metadata`: that would wait for metadata still being computed (the source hash)
    dropped = [k for k in STATE_KEYS if META_PREFIX + k in model.ir.metadata_props]
    if dropped:
        logger.info("the old head's %s metadata dropped: the new head is untrained", ", ".join(dropped))
    set_metadata(
        work.ir,
        labels=names,
        version=__version__,
        **{k: None for k in STATE_KEYS},
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
            "dropped_state": dropped,
        },
    )
    logger.info(
        "swapped head: %s (%s, %d features) -> %d labels; removed %s",
        head.kind, head.features, head.num_features, len(names), ", ".join(head.removed),
    )
    return work
