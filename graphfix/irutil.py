"""Small onnx-ir helpers shared by surgery and the export passes."""

from __future__ import annotations

__all__ = ["input_at", "const_array", "is_constant", "graph_names", "fresh_name", "downstream_nodes", "varint"]

from typing import Iterable

import numpy as np
import onnx_ir as ir


def input_at(node: ir.Node, index: int) -> ir.Value | None:
    """Input `index` of `node`, or None when it is omitted (trailing, or an empty name).

    ONNX optional inputs may be left out at the end or given as "" in the middle; every pass and
    check reads inputs past the first through this, never by `node.inputs[i]`.
    """
    return node.inputs[index] if index < len(node.inputs) else None


def _behind_identity(value: ir.Value) -> ir.Value:
    """The value an Identity chain copies (TorchScript writes a tensor equal to an earlier one as an
    Identity of it), or `value` itself."""
    for _ in range(16):
        producer = value.producer()
        if value.const_value is not None or producer is None or producer.op_type != "Identity" \
                or producer.domain not in ("", "ai.onnx") or not producer.inputs or producer.inputs[0] is None:
            break
        value = producer.inputs[0]
    return value


def _constant_node(value: ir.Value) -> bool:
    producer = value.producer()
    return producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx")


def is_constant(value: ir.Value | None) -> bool:
    """Whether `value` is an initializer or a Constant-node output (through Identity nodes), without
    reading its data (cheap on large weights)."""
    if value is None:
        return False
    value = _behind_identity(value)
    return value.const_value is not None or value.is_initializer() or _constant_node(value)


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The NumPy value of an initializer or Constant-node output (through Identity nodes), else None."""
    if value is None:
        return None
    value = _behind_identity(value)
    tensor = value.const_value
    if tensor is None:
        if not _constant_node(value):
            return None
        try:
            tensor = ir.convenience.get_const_tensor(value)
        except Exception:  # an attribute form get_const_tensor does not know
            return None
        if tensor is None:
            return None
    return tensor.numpy()


def graph_names(graph: ir.Graph) -> set[str]:
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


def downstream_nodes(values: Iterable[ir.Value]) -> set[ir.Node]:
    """Every node that reads `values`, directly or through other nodes."""
    seen: set[ir.Node] = set()
    stack = [use.node for v in values for use in v.uses()]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for out in node.outputs:
            stack.extend(use.node for use in out.uses())
    return seen


def varint(n: int) -> bytes:
    """`n` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
