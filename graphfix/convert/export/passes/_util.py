"""Small onnx-ir helpers the export passes share (constants, fresh names, initializers)."""

from __future__ import annotations

__all__ = ["input_at", "const_array", "fresh_name", "add_initializer", "only_consumer", "main_graph_names", "set_dtype", "take_over"]

import numpy as np
import onnx_ir as ir

from graphfix.irutil import const_array, fresh_name, input_at
from graphfix.irutil import graph_names as main_graph_names


def add_initializer(graph: ir.Graph, taken: set[str], base: str, array: np.ndarray) -> ir.Value:
    """Register `array` as a new initializer with a fresh name based on `base`."""
    name = fresh_name(taken, base)
    tensor = ir.tensor(np.array(array, order="C"), name=name)
    value = ir.Value(name=name, const_value=tensor)
    value.dtype = tensor.dtype
    value.shape = ir.Shape(tensor.shape)
    graph.register_initializer(value)
    return value


def only_consumer(value: ir.Value) -> ir.Node | None:
    """The single node using `value` (once), if it is not also a graph output."""
    if value.is_graph_output():
        return None
    uses = list(value.uses())
    if len(uses) != 1:
        return None
    return uses[0].node


def set_dtype(value: ir.Value, dtype: ir.DataType) -> None:
    """Give `value` a new tensor type of `dtype`.

    Never `value.dtype = ...` on a cloned graph: onnx-ir's setter edits the type object in place,
    and `Graph.clone()` shares type objects with the original, so the input model would change.
    """
    value.type = ir.TensorType(dtype)


def take_over(node: ir.Node, new: ir.Value) -> None:
    """`new`, the output of a freshly built node, takes the place of `node`'s first output (its
    uses, graph-output slot, shape, dtype and name); `node` is removed."""
    out = node.outputs[0]
    new.shape, new.dtype = out.shape, out.dtype
    name = out.name
    ir.convenience.replace_all_uses_with(out, new, replace_graph_outputs=True)
    node.graph.remove(node, safe=True)
    out.name = None
    new.name = name
