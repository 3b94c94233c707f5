"""C9 constants folded, C12 size and external data, C13 hygiene."""

from __future__ import annotations

__all__ = ["check_folded", "check_size", "check_hygiene"]

import logging

import onnx_ir as ir

from graphfix.convert.check._context import CheckContext
from graphfix.convert.check._report import FAIL, INFO, WARN
from graphfix.convert.onnx_limits import location_problem

logger = logging.getLogger(__name__)

_PROTO_LIMIT = 2**31 - 1


def check_folded(ctx: CheckContext) -> None:
    """C9: folding + dead-code removal on a clone removes nothing; no Shape/Size subgraphs."""
    from graphfix.convert.export.passes import FoldConstantsPass

    clone = ctx.clone()
    before = sum(1 for n in clone.graph if n.op_type != "Constant")
    try:
        FoldConstantsPass()(clone)
    except Exception as exc:  # folding is advisory here
        logger.warning("C9 folding failed: %s", exc)
        return
    removed = before - sum(1 for n in clone.graph if n.op_type != "Constant")
    if removed > 0:
        ctx.add("C9", WARN, f"{removed} nodes fold away (constant or dead subgraphs)",
                "graphfix export (or polygraphy surgeon sanitize --fold-constants)", rule="foldable")
    shape_ops = [n for n in ctx.graph if n.op_type in ("Shape", "Size") and n.domain in ("", "ai.onnx")]
    if shape_ops:
        ctx.add("C9", WARN, f"{len(shape_ops)} Shape/Size nodes (shape subgraph: onnxruntime pins it to CPU, "
                "TensorRT builds shape tensors)", "graphfix export turns view-style reshapes into Flatten",
                node=shape_ops[0], rule="shape-ops")


def check_size(ctx: CheckContext) -> None:
    """C12: under the 2 GB protobuf limit; external data relative and present."""
    size = ctx.file_size()
    if size is not None and size > _PROTO_LIMIT:
        ctx.add("C12", FAIL, f"the .onnx file is {size / 2**30:.2f} GiB (protobuf limit 2 GiB)",
                "save with external data (graphfix export does above 2 GB)", rule="proto-limit")
    external = [v for v in ctx.graph.initializers.values() if isinstance(v.const_value, ir.ExternalTensor)]
    bad_abs, missing = [], []
    for value in external:
        tensor = value.const_value
        problem = location_problem(str(tensor.location), str(tensor.base_dir) if tensor.base_dir else None)
        if problem is not None:
            (missing if problem[0] == "missing" else bad_abs).append(value.name)
    if bad_abs:
        ctx.add("C12", FAIL, f"{len(bad_abs)} external tensors use an absolute or parent location, e.g. {bad_abs[0]}",
                "re-save with a relative location beside the model", node=bad_abs[0], rule="external-location")
    if missing:
        ctx.add("C12", FAIL, f"{len(missing)} external data files are missing, e.g. for {missing[0]}",
                "copy the .data file beside the model", node=missing[0], rule="external-missing")
    if not ctx.path and not external and ctx.weight_bytes() > _PROTO_LIMIT - (64 << 20):
        ctx.add("C12", INFO, "weights exceed 2 GB: the model is saved with external data", "", rule="external-needed")
    if external:
        files = sorted({v.const_value.location for v in external})
        ctx.add("C12", INFO, f"external data in {', '.join(files)} ({len(external)} tensors)",
                "ship the data file(s) with the model", rule="external-data")


def check_hygiene(ctx: CheckContext) -> None:
    """C13: topological order, unique non-empty node names, no initializer inputs, nothing unused."""
    graph = ctx.graph
    available = {v.name for v in graph.inputs} | set(graph.initializers)
    unsorted = None
    for node in graph:
        for value in node.inputs:
            if value is not None and value.name and value.name not in available and value.producer() is not None \
                    and value.producer().graph is graph:
                unsorted = unsorted or node
        available.update(o.name for o in node.outputs if o.name)
    if unsorted is not None:
        ctx.add("C13", WARN, "nodes are not in topological order", "graphfix export sorts them", node=unsorted,
                rule="toposort")
    unnamed = [n for n in graph if not n.name]
    if unnamed:
        ctx.add("C13", WARN, f"{len(unnamed)} nodes have no name", "graphfix export names them", node=unnamed[0],
                rule="node-names")
    seen, dups = set(), []
    for n in graph:
        if n.name and n.name in seen:
            dups.append(n)
        seen.add(n.name)
    if dups:
        ctx.add("C13", WARN, f"{len(dups)} duplicate node names, e.g. {dups[0].name}", "graphfix export renames them",
                node=dups[0], rule="node-names")
    init_inputs = [v for v in graph.inputs if v.is_initializer()]
    if init_inputs:
        ctx.add("C13", WARN, f"{len(init_inputs)} initializers are listed as graph inputs, e.g. {init_inputs[0].name}",
                "graphfix export removes them from the inputs", node=init_inputs[0].name, rule="initializer-inputs")
    unused = [v for v in graph.initializers.values() if not v.uses() and not v.is_graph_output()]
    if unused:
        ctx.add("C13", WARN, f"{len(unused)} unused initializers, e.g. {unused[0].name}", "graphfix export drops them",
                node=unused[0].name, rule="unused-initializers")
    dead_inputs = [v for v in graph.inputs if not v.is_initializer() and not v.uses() and not v.is_graph_output()]
    if dead_inputs:
        ctx.add("C13", WARN, f"unused graph inputs: {', '.join(v.name for v in dead_inputs)}",
                "remove them (e.g. MXNet softmax_label)", node=dead_inputs[0].name, rule="unused-inputs")
    names = [v.name for v in graph.outputs]
    if any(not n for n in names) or len(set(names)) != len(names):
        ctx.add("C13", WARN, "graph outputs must have unique, non-empty names", "name them", rule="output-names")
