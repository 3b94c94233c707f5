"""Remove inference no-ops: Dropout in inference mode and Identity."""

from __future__ import annotations

__all__ = ["RemoveInferenceNoOpsPass", "dropout_is_training"]

import logging

import onnx_ir as ir

from graphfix.convert.export.passes._util import const_array, input_at

logger = logging.getLogger(__name__)


def dropout_is_training(node: ir.Node, opset: int) -> bool | None:
    """True/False when a Dropout's mode is known, None when `training_mode` is computed.

    Opset < 7 Dropout trains unless `is_test=1`; opset 7-11 is always inference; from
    opset 12 the optional third input `training_mode` decides (absent means False).
    """
    if opset < 7:
        return node.attributes.get_int("is_test", 0) == 0
    if opset < 12 or input_at(node, 2) is None:
        return False
    flag = const_array(input_at(node, 2))
    if flag is None:
        return None
    return bool(flag.reshape(-1)[0]) if flag.size else False


class RemoveInferenceNoOpsPass(ir.passes.InPlacePass):
    """Remove Dropout (inference mode) and Identity nodes from the main graph.

    Cases:
        1. `y = Identity(x)` or `y = Dropout(x)` in inference mode with the mask output unused:
           every use of `y` reads `x` instead and the node is removed.
        2. When `y` is a graph output and `x` is made inside the graph, `x` takes over the
           output's name, so the model's interface does not change.
        3. When `y` is a graph output and `x` is a graph input, an initializer or another graph
           output, the node is kept (removing it would change the interface).
        4. Dropout in training mode (or with a computed `training_mode`), and Dropout whose mask
           is used, is kept: the readiness check reports it (C11).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = int(model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1)))
        modified = False
        for node in list(model.graph):
            if self._try_remove(node, opset):
                modified = True
        return ir.passes.PassResult(model, modified)

    def _try_remove(self, node: ir.Node, opset: int) -> bool:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("Identity", "Dropout"):
            return False
        if not node.inputs or node.inputs[0] is None or not node.outputs:
            return False
        if node.op_type == "Dropout":
            if dropout_is_training(node, opset) is not False:
                return False
            if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
                return False
        x, y = node.inputs[0], node.outputs[0]
        graph = node.graph
        if y.is_graph_output():
            if x.is_graph_input() or x.is_initializer() or x.is_graph_output() or x.producer() is None:
                return False
            name = y.name
            x.shape = x.shape if x.shape is not None else y.shape
            if x.type is None and y.dtype is not None:
                x.type = ir.TensorType(y.dtype)
            ir.convenience.replace_all_uses_with(y, x, replace_graph_outputs=True)
            y.name = None
            x.name = name
        else:
            ir.convenience.replace_all_uses_with(y, x)
        graph.remove(node, safe=True)
        logger.debug("removed %s %s", node.op_type, node.name)
        return True
