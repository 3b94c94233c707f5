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
        3. Nodes whose outputs nobody uses, and initializers nobody reads, are removed
           (onnx-ir `RemoveUnusedNodesPass`); graph outputs are never touched.

    `modified` is True when any node or initializer was added or removed.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnx_ir.passes.common import LiftConstantsToInitializersPass, RemoveUnusedNodesPass
        from onnxscript.optimizer import fold_constants_ir

        before = _fingerprint(model)
        fold_constants_ir(
            model,
            onnx_shape_inference=False,
            input_size_limit=_SIZE_LIMIT,
            output_size_limit=_SIZE_LIMIT,
        )
        RemoveUnusedNodesPass()(model)
        LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
        modified = _fingerprint(model) != before
        logger.debug("fold: %s", "changed" if modified else "no change")
        return ir.passes.PassResult(model, modified)


def _fingerprint(model: ir.Model) -> tuple:
    graph = model.graph
    return (
        tuple((n.op_type, id(n)) for n in graph),
        tuple(sorted(graph.initializers)),
    )
