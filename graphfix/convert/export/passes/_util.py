"""Small onnx-ir helpers the export passes share (constants, fresh names, initializers)."""

from __future__ import annotations

__all__ = ["const_array", "fresh_name", "add_initializer", "only_consumer", "main_graph_names", "set_dtype"]

import numpy as np
import onnx_ir as ir


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The NumPy value of an initializer or Constant-node output, else None."""
    if value is None:
        return None
    tensor = value.const_value
    if tensor is None:
        producer = value.producer()
        if producer is None or producer.op_type != "Constant" or producer.domain not in ("", "ai.onnx"):
            return None
        try:
            tensor = ir.convenience.get_const_tensor(value)
        except Exception:  # an attribute form get_const_tensor does not know
            return None
        if tensor is None:
            return None
    return tensor.numpy()


def main_graph_names(graph: ir.Graph) -> set[str]:
    """Every value and node name used in `graph` (inputs, initializers, node outputs, node names)."""
    names = {v.name for v in graph.inputs if v.name}
    names.update(graph.initializers)
    for node in graph:
        if node.name:
            names.add(node.name)
        names.update(o.name for o in node.outputs if o.name)
    return names


def fresh_name(taken: set[str], base: str) -> str:
    """`base`, or `base_1`, `base_2`... whichever is not in `taken`; the result is added to `taken`."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


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
