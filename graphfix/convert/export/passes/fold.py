"""Constant folding and dead-code removal with onnxscript's optimizer on onnx-ir."""

from __future__ import annotations

__all__ = ["FoldConstantsPass"]

import logging

import onnx_ir as ir

logger = logging.getLogger(__name__)

#: Largest tensor (elements) the folder computes or writes: keeps big weights out of folding.
_SIZE_LIMIT = 1 << 20


class FoldConstantsPass(ir.passes.InPlacePass):
    """Fold constant sub-expressions, drop dead nodes and unused initializers.

    Cases:
        1. A node whose inputs are all constants (initializers or Constant nodes) and whose
           output is small (< 1M elements) is evaluated and replaced by an initializer
           (onnxscript `fold_constants`). Shape/Size of static shapes fold too; a Shape chain
           that depends on a symbolic batch dimension cannot fold (see ConstantReshapePass).
        2. Constant nodes left behind become initializers.
        3. SplitToSequence whose `split` is neither a constant nor a known 1-D shape is left
           alone (onnxscript's rewrite of it raises on a scalar `split` of unknown value).
        4. Nodes whose outputs nobody uses, and initializers nobody reads, are removed
           (onnx-ir `RemoveUnusedNodesPass`); graph outputs are never touched.

    `modified` is True when any node or initializer was added or removed.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnx_ir.passes.common import LiftConstantsToInitializersPass, RemoveUnusedNodesPass
        from onnxscript.optimizer import fold_constants_ir

        before = _fingerprint(model)
        hidden = _hide_unknown_splits(model.graph)
        try:
            fold_constants_ir(
                model,
                onnx_shape_inference=False,
                input_size_limit=_SIZE_LIMIT,
                output_size_limit=_SIZE_LIMIT,
            )
        finally:
            for value, shape in hidden:
                value.shape = shape
        RemoveUnusedNodesPass()(model)
        LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
        modified = _fingerprint(model) != before
        logger.debug("fold: %s", "changed" if modified else "no change")
        return ir.passes.PassResult(model, modified)


def _hide_unknown_splits(graph: ir.Graph) -> list[tuple[ir.Value, ir.Shape | None]]:
    """Clear the shape of each SplitToSequence `split` input that has no constant value and is
    not 1-D, so that the folder skips the node; -> (value, shape) pairs to put back."""
    hidden = []
    for node in ir.traversal.RecursiveGraphIterator(graph):
        split = node.inputs[1] if node.op_type == "SplitToSequence" and len(node.inputs) > 1 else None
        if split is not None and split.const_value is None and split.shape is not None and len(split.shape) != 1:
            hidden.append((split, split.shape))
            split.shape = None
    return hidden


def _fingerprint(model: ir.Model) -> tuple:
    graph = model.graph
    return (
        tuple((n.op_type, id(n)) for n in graph),
        tuple(sorted(graph.initializers)),
    )
