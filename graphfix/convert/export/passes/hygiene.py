"""Graph hygiene: no initializers as inputs, no dead nodes, unique names, topological order."""

from __future__ import annotations

__all__ = ["HygienePass"]

import logging

import onnx_ir as ir

logger = logging.getLogger(__name__)


class HygienePass(ir.passes.InPlacePass):
    """Tidy the graph the way TensorRT and onnxruntime expect it.

    Cases:
        1. Initializers listed as graph inputs are removed from the inputs (they would be
           overridable and block folding).
        2. Dead nodes and unused initializers are removed.
        3. Every node gets a unique, non-empty name (`<op>_<n>` for unnamed ones, a suffix
           for duplicates); every value gets a name (onnx-ir `NameFixPass`).
        4. Nodes are sorted topologically (onnx-ir `TopologicalSortPass`, stable).

    `modified` is True when inputs, nodes, names or order changed.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnx_ir.passes.common import (
            NameFixPass,
            RemoveInitializersFromInputsPass,
            RemoveUnusedNodesPass,
            TopologicalSortPass,
        )

        before = _fingerprint(model)
        RemoveInitializersFromInputsPass()(model)
        RemoveUnusedNodesPass()(model)
        _name_nodes(model.graph)
        NameFixPass()(model)
        TopologicalSortPass()(model)
        return ir.passes.PassResult(model, _fingerprint(model) != before)


def _name_nodes(graph: ir.Graph) -> None:
    seen: set[str] = set()
    counters: dict[str, int] = {}
    names = {n.name for n in graph if n.name}
    for node in graph:
        name = node.name
        if not name or name in seen:
            base = name or node.op_type
            i = counters.get(base, 0)
            while True:
                candidate = f"{base}_{i}"
                i += 1
                if candidate not in names and candidate not in seen:
                    break
            counters[base] = i
            node.name = candidate
            names.add(candidate)
        seen.add(node.name)


def _fingerprint(model: ir.Model) -> tuple:
    graph = model.graph
    return (
        tuple(v.name for v in graph.inputs),
        tuple((id(n), n.name, tuple(o.name for o in n.outputs)) for n in graph),
        tuple(sorted(graph.initializers)),
    )
