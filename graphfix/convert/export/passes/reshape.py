"""Replace Reshapes whose shape comes from a Shape chain with Flatten or a constant shape."""

from __future__ import annotations

__all__ = ["ConstantReshapePass", "resolve_shape_chain"]

import logging

import numpy as np
import onnx_ir as ir

from graphfix.convert.export.passes._util import add_initializer, const_array, input_at, main_graph_names, take_over

logger = logging.getLogger(__name__)

#: An element of a shape vector: ("const", n) or ("dim", source value, axis).
_Elem = tuple


def _elements(value: ir.Value | None, depth: int = 0) -> list[_Elem] | None:
    """The elements of a small 1-D (or scalar) int tensor, symbolically, or None if unknown."""
    if value is None or depth > 16:
        return None
    array = const_array(value)
    if array is not None:
        if array.dtype.kind not in "iu" or array.ndim > 1:
            return None
        return [("const", int(v)) for v in array.reshape(-1)]
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op == "Shape":
        src = node.inputs[0]
        if src is None or src.shape is None:
            return None
        rank = len(src.shape)
        start = node.attributes.get_int("start", 0)
        end = node.attributes.get_int("end", rank)
        start, end = (s + rank if s < 0 else s for s in (start, end))
        return [("dim", src, i) for i in range(max(0, start), min(rank, end))]
    if op in ("Unsqueeze", "Squeeze", "Reshape", "Cast", "Identity"):
        if op == "Cast" and node.attributes.get_int("to", 0) not in (6, 7):
            return None
        return _elements(node.inputs[0], depth + 1)
    if op == "Concat":
        out: list[_Elem] = []
        for v in node.inputs:
            part = _elements(v, depth + 1)
            if part is None:
                return None
            out.extend(part)
        return out
    if op == "Gather":
        data = _elements(node.inputs[0], depth + 1)
        idx = const_array(input_at(node, 1))
        if data is None or idx is None or node.attributes.get_int("axis", 0) != 0:
            return None
        try:
            return [data[int(i)] for i in idx.reshape(-1)]
        except IndexError:
            return None
    if op == "Slice":
        data = _elements(node.inputs[0], depth + 1)
        args = [const_array(input_at(node, i)) for i in range(1, 5)]
        if data is None or args[0] is None or args[1] is None:
            return None
        if args[2] is not None and int(args[2].reshape(-1)[0]) != 0:
            return None
        step = int(args[3].reshape(-1)[0]) if args[3] is not None else 1
        start, end = int(args[0].reshape(-1)[0]), int(args[1].reshape(-1)[0])
        return data[slice(start, end, step)] if step != 0 else None
    return None


def resolve_shape_chain(node: ir.Node) -> list[int] | None:
    """The constant shape equivalent to a Reshape's computed `shape` input, or None.

    A dimension copied from the Reshape's own input at the same position becomes 0 (copy);
    one copied from a static dimension becomes that number; the symbolic batch dimension at
    another position, or any other computed element, makes the chain unresolvable.
    """
    data, shape_in = node.inputs[0], input_at(node, 1)
    if data is None or shape_in is None or const_array(shape_in) is not None:
        return None
    elems = _elements(shape_in)
    if elems is None:
        return None
    allowzero = node.attributes.get_int("allowzero", 0)
    out: list[int] = []
    for pos, elem in enumerate(elems):
        if elem[0] == "const":
            if elem[1] == 0 and allowzero:
                return None  # a literal zero-sized dimension: leave it alone
            out.append(elem[1])
            continue
        _, src, axis = elem
        dim = src.shape[axis]
        if isinstance(dim, int):
            out.append(dim)
            continue
        same = src is data or (data.shape is not None and axis < len(data.shape) and data.shape[axis] == dim)
        if pos == axis and same:
            out.append(0)  # copy; the rewrite sets allowzero=0 (no literal zeros remain)
        else:
            return None
    if sum(1 for d in out if d == -1) > 1:
        return None
    return out


class ConstantReshapePass(ir.passes.InPlacePass):
    """Replace `Reshape(x, <Shape chain>)` with `Flatten` or a `Reshape` with a constant shape.

    Cases:
        1. The shape is computed from `Shape(x)` through Gather/Slice/Unsqueeze/Squeeze/Concat/
           Cast with constant indices (torch `x.view(x.size(0), -1)`, dynamo's `sym_size`).
           Elements that copy the symbolic batch dimension of `x` at the same position become
           0, static dimensions become their value, constants stay.
        2. When the result is `[0, -1]` the node becomes `Flatten(axis=1)` (TensorRT and ORT
           handle it without a shape-tensor subgraph); otherwise the shape becomes an initializer.
        3. `allowzero=1` (dynamo exports) is dropped: the resolved shape holds no literal 0.
        4. A shape that cannot be resolved (data-dependent, batch at another position) is kept.

    The dead Shape chain is removed afterwards.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnx_ir.passes.common import RemoveUnusedNodesPass

        graph = model.graph
        if any(
            (n.op_type == "Shape" and n.inputs[0] is not None and n.inputs[0].shape is None)
            or (n.op_type == "Reshape" and len(n.inputs) > 1 and n.inputs[0] is not None and n.inputs[0].shape is None
                and const_array(input_at(n, 1)) is None)
            for n in graph
        ):
            from onnx_ir.passes.common import ShapeInferencePass

            ShapeInferencePass(strict_mode=False)(model)  # the chain needs ranks; only fills gaps
        taken = main_graph_names(graph)
        modified = False
        for node in list(graph):
            if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx"):
                continue
            shape = resolve_shape_chain(node)
            if shape is None:
                continue
            if shape == [0, -1]:
                flat = ir.node("Flatten", [node.inputs[0]], {"axis": 1}, name=node.name, num_outputs=1)
                graph.insert_before(node, flat)
                take_over(node, flat.outputs[0])
            else:
                base = (node.name or "reshape") + ".shape"
                const = add_initializer(graph, taken, base, np.array(shape, dtype=np.int64))
                node.replace_input_with(1, const)
                node.attributes.pop("allowzero", None)
            logger.debug("reshape %s -> %s", node.name, shape)
            modified = True
        if modified:
            RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)
