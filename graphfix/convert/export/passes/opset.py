"""Convert the model to the target opset (default 17) and stamp the IR version explicitly."""

from __future__ import annotations

__all__ = ["ConvertOpsetPass", "MIN_SOURCE_OPSET", "MAX_TARGET_OPSET"]

import logging

import numpy as np
import onnx_ir as ir

from graphfix.convert._onnx import ir_version_for
from graphfix.convert.export.passes._util import (
    add_initializer, const_array, fresh_name, input_at, main_graph_names, take_over,
)
from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)

#: Oldest opset the pass upgrades from; older models go through `onnx.version_converter` first.
MIN_SOURCE_OPSET = 7
#: Newest target opset graphfix writes (inside TensorRT 10/11 and onnxruntime 1.31).
MAX_TARGET_OPSET = 20
_REDUCE_18 = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
)


class ConvertOpsetPass(ir.passes.InPlacePass):
    """Move the default-domain opset to `target` (13..20) and stamp `ir_version` (8..10).

    Cases (upgrades; each adapter only runs when the model's opset is below the version
    that changed the op):
        1. Softmax/LogSoftmax/Hardmax < 13 (2-D coercion at `axis`): when `axis` is the last
           axis, or every later dimension is 1, only `axis` is written explicitly; otherwise
           `Flatten(axis) -> Softmax(axis=1) -> Reshape(original shape)` keeps the old meaning.
        2. Attributes that became inputs: Squeeze/Unsqueeze/ReduceSum `axes` and Split `split`
           (13), Clip `min`/`max` and Pad `pads`/`value` (11), Slice `starts/ends/axes` and
           TopK `k` (10), Dropout `ratio` (12), Reduce* `axes` (18, when targeting >= 18).
        3. Upsample and Resize-10 become Resize-13 (`asymmetric`, nearest `floor`), as the
           Upsample spec defines; Scatter (deprecated in 11) becomes ScatterElements.
        4. Attributes that the target schema no longer has (legacy `spatial`, `is_test`,
           `consumed_inputs`) are dropped.
        5. Downgrades (torch's dynamo exporter writes opset >= 18): Reduce* `axes` inputs go back
           to attributes, Split drops `num_outputs`; Resize/AveragePool/Pad/Scatter* newer
           attributes or inputs must hold their defaults. Ops whose only change is wider type
           support are renumbered. Anything else is GraphfixError(bad_input).

    The opset import and `ir_version` are rewritten even when no node changes; `modified` is
    True when anything (including the two numbers) changed.
    """

    def __init__(self, target: int = 17) -> None:
        super().__init__()
        if not 13 <= target <= MAX_TARGET_OPSET:
            raise GraphfixError(
                f"target opset {target} is outside 13..{MAX_TARGET_OPSET}", kind="usage",
                hint="graphfix writes opset 17 by default",
            )
        self.target = target

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        source = int(model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0)))
        old_ir = model.ir_version
        modified = False
        if source < MIN_SOURCE_OPSET:
            raise GraphfixError(
                f"opset {source} is too old to convert (graphfix upgrades from {MIN_SOURCE_OPSET})",
                kind="bad_input", hint="run onnx.version_converter.convert_version first",
            )
        if source > self.target:
            modified = self._downgrade(model, source)
        elif source < self.target:
            modified = self._upgrade(model, source)
        if source != self.target:
            model.opset_imports.pop("ai.onnx", None)
            model.opset_imports[""] = self.target
            modified = True
        model.ir_version = ir_version_for(self.target, model.ir_version)
        modified = modified or model.ir_version != old_ir
        return ir.passes.PassResult(model, modified)

    # ----- downgrade ---------------------------------------------------------------------
    def _downgrade(self, model: ir.Model, source: int) -> bool:
        import onnx.defs

        modified = False
        for node in list(model.graph):
            if node.domain not in ("", "ai.onnx"):
                continue
            try:
                since = onnx.defs.get_schema(node.op_type, source, "").since_version
            except Exception:
                continue
            if since <= self.target:
                continue
            where = f"{node.name} ({node.op_type})"
            try:
                onnx.defs.get_schema(node.op_type, self.target, "")
            except Exception:
                raise GraphfixError(
                    f"cannot lower opset {source} to {self.target}: {node.op_type} does not exist in opset {self.target}",
                    kind="bad_input", node=where, hint=f"export with --opset {min(source, MAX_TARGET_OPSET)}",
                ) from None
            problem = _lower_node(node, self.target)
            if problem:
                raise GraphfixError(
                    f"cannot lower opset {source} to {self.target}: {problem}", kind="bad_input", node=where,
                    hint=f"export with --opset {min(source, MAX_TARGET_OPSET)}",
                )
            modified = True
        if self._drop_legacy_attributes(model.graph):
            modified = True
        return modified

    # ----- upgrade -----------------------------------------------------------------------
    def _upgrade(self, model: ir.Model, source: int) -> bool:
        graph = model.graph
        needs_shapes = source < 13 and any(
            n.op_type in ("Softmax", "LogSoftmax", "Hardmax") and n.inputs and n.inputs[0] is not None
            and n.inputs[0].shape is None
            for n in graph
        )
        if needs_shapes:
            from onnx_ir.passes.common import ShapeInferencePass

            ShapeInferencePass(strict_mode=False, data_prop=True)(model)
        taken = main_graph_names(graph)
        modified = False
        for node in list(graph):
            if node.domain not in ("", "ai.onnx"):
                continue
            if self._adapt(graph, node, source, taken):
                modified = True
        if self._drop_legacy_attributes(graph):
            modified = True
        return modified

    def _adapt(self, graph: ir.Graph, node: ir.Node, source: int, taken: set[str]) -> bool:
        op = node.op_type
        if op in ("Softmax", "LogSoftmax", "Hardmax") and source < 13:
            return _softmax_13(graph, node, taken)
        if op in ("Squeeze", "Unsqueeze", "ReduceSum") and source < 13:
            return _attr_to_input(graph, node, taken, "axes", 1, np.int64)
        if op in _REDUCE_18 and source < 18 <= self.target:
            return _attr_to_input(graph, node, taken, "axes", 1, np.int64)
        if op == "Split" and source < 13:
            return _attr_to_input(graph, node, taken, "split", 1, np.int64)
        if op == "Clip" and source < 11:
            lo = node.attributes.get_float("min", None)
            hi = node.attributes.get_float("max", None)
            node.attributes.pop("min", None)
            node.attributes.pop("max", None)
            dtype = _np_dtype(node.inputs[0])
            node.resize_inputs(3)
            if lo is not None:
                node.replace_input_with(1, add_initializer(graph, taken, f"{node.name or 'clip'}.min", np.array(lo, dtype)))
            if hi is not None:
                node.replace_input_with(2, add_initializer(graph, taken, f"{node.name or 'clip'}.max", np.array(hi, dtype)))
            return True
        if op == "Pad" and source < 11:
            pads = node.attributes.get_ints("pads", None) or node.attributes.get_ints("paddings", [])
            value = node.attributes.get_float("value", 0.0)
            for key in ("pads", "paddings", "value"):
                node.attributes.pop(key, None)
            node.resize_inputs(3)
            node.replace_input_with(1, add_initializer(graph, taken, f"{node.name or 'pad'}.pads", np.array(pads, np.int64)))
            if value:
                dtype = _np_dtype(node.inputs[0])
                node.replace_input_with(2, add_initializer(graph, taken, f"{node.name or 'pad'}.value", np.array(value, dtype)))
            else:
                node.resize_inputs(2)
            return True
        if op == "Slice" and source < 10:
            starts = node.attributes.get_ints("starts", [])
            ends = node.attributes.get_ints("ends", [])
            axes = node.attributes.get_ints("axes", None)
            for key in ("starts", "ends", "axes"):
                node.attributes.pop(key, None)
            base = node.name or "slice"
            node.resize_inputs(4 if axes is not None else 3)
            node.replace_input_with(1, add_initializer(graph, taken, f"{base}.starts", np.array(starts, np.int64)))
            node.replace_input_with(2, add_initializer(graph, taken, f"{base}.ends", np.array(ends, np.int64)))
            if axes is not None:
                node.replace_input_with(3, add_initializer(graph, taken, f"{base}.axes", np.array(axes, np.int64)))
            return True
        if op == "TopK" and source < 10:
            k = node.attributes.get_int("k", 1)
            node.attributes.pop("k", None)
            node.resize_inputs(2)
            node.replace_input_with(1, add_initializer(graph, taken, f"{node.name or 'topk'}.k", np.array([k], np.int64)))
            return True
        if op == "Dropout" and source < 12:
            ratio = node.attributes.get_float("ratio", 0.5)
            node.attributes.pop("ratio", None)
            node.resize_inputs(2)
            dtype = _np_dtype(node.inputs[0])
            node.replace_input_with(1, add_initializer(graph, taken, f"{node.name or 'dropout'}.ratio", np.array(ratio, dtype)))
            return True
        if op == "Upsample" or (op == "Resize" and source < 11):
            return _to_resize(graph, node, taken)
        if op == "Scatter":  # deprecated in 11 for ScatterElements, same inputs and `axis`
            node.op_type = "ScatterElements"
            return True
        if op == "BatchNormalization" and source < 9 and node.attributes.get_int("spatial", 1) == 0:
            raise GraphfixError(
                "BatchNormalization spatial=0 (per-activation statistics) has no opset-9+ form",
                kind="unsupported_op", node=f"{node.name} (BatchNormalization)",
            )
        return False

    def _drop_legacy_attributes(self, graph: ir.Graph) -> bool:
        import onnx.defs

        modified = False
        for node in graph:
            if node.domain not in ("", "ai.onnx"):
                continue
            try:
                schema = onnx.defs.get_schema(node.op_type, self.target, "")
            except Exception:
                continue
            for key in list(node.attributes):
                if key not in schema.attributes:
                    logger.info("dropping legacy attribute %s of %s (%s)", key, node.name, node.op_type)
                    node.attributes.pop(key)
                    modified = True
        return modified


def _np_dtype(value: ir.Value | None):
    if value is not None and value.dtype is not None:
        try:
            return value.dtype.numpy()
        except Exception:
            pass
    return np.float32


def _attr_to_input(graph, node, taken, key, index, dtype) -> bool:
    ints = node.attributes.get_ints(key, None)
    node.attributes.pop(key, None)
    if ints is None:
        return False
    if len(node.inputs) <= index:
        node.resize_inputs(index + 1)
    node.replace_input_with(index, add_initializer(graph, taken, f"{node.name or node.op_type}.{key}", np.array(ints, dtype)))
    return True


def _softmax_13(graph: ir.Graph, node: ir.Node, taken: set[str]) -> bool:
    x = node.inputs[0]
    axis = node.attributes.get_int("axis", 1)
    shape = x.shape if x is not None and x.shape is not None else node.outputs[0].shape  # same shape
    if shape is None:
        if axis == -1:
            node.attributes["axis"] = ir.AttrInt64("axis", -1)
            return True
        raise GraphfixError(
            f"cannot convert {node.op_type} to opset 13: the rank of its input is unknown",
            kind="bad_input", node=f"{node.name} ({node.op_type})",
        )
    rank = len(shape)
    axis = axis + rank if axis < 0 else axis
    tail = [shape[i] for i in range(axis + 1, rank)]
    if axis == rank - 1 or all(isinstance(d, int) and d == 1 for d in tail):
        node.attributes["axis"] = ir.AttrInt64("axis", axis)
        return True
    symbolic = [i for i, d in enumerate(shape) if not isinstance(d, int)]
    if len(symbolic) > 1:
        raise GraphfixError(
            f"cannot convert opset-11 {node.op_type} on axis {axis} of a tensor with {len(symbolic)} dynamic dimensions",
            kind="bad_input", node=f"{node.name} ({node.op_type})", hint="fix the input shape (--batch N)",
        )
    target = [-1 if not isinstance(d, int) else int(d) for d in shape]
    base = node.name or node.op_type.lower()
    flat = ir.node("Flatten", [x], {"axis": axis}, name=f"{base}_flatten", num_outputs=1)
    soft = ir.node(node.op_type, [flat.outputs[0]], {"axis": 1}, name=f"{base}_2d", num_outputs=1)
    const = add_initializer(graph, taken, f"{base}.shape", np.array(target, np.int64))
    back = ir.node("Reshape", [soft.outputs[0], const], name=base, num_outputs=1)
    for n in (flat, soft):
        n.outputs[0].name = f"{n.name}_out"
        n.outputs[0].dtype = x.dtype
    graph.insert_before(node, [flat, soft, back])
    take_over(node, back.outputs[0])
    return True


def _to_resize(graph: ir.Graph, node: ir.Node, taken: set[str]) -> bool:
    mode = node.attributes.get_string("mode", "nearest")
    scales_attr = node.attributes.get_floats("scales", None)
    if scales_attr is not None:
        scales = add_initializer(graph, taken, f"{node.name or 'upsample'}.scales", np.array(scales_attr, np.float32))
    elif input_at(node, 1) is not None:
        scales = input_at(node, 1)
    else:
        return False
    attrs = {
        "mode": "linear" if mode in ("linear", "bilinear") else "nearest",
        "coordinate_transformation_mode": "asymmetric",
    }
    if attrs["mode"] == "nearest":
        attrs["nearest_mode"] = "floor"
    resize = ir.node("Resize", [node.inputs[0], None, scales], attrs, name=node.name, num_outputs=1)
    graph.insert_before(node, resize)
    take_over(node, resize.outputs[0])
    return True


def _lower_split(node: ir.Node) -> str | None:
    """Split-18 `num_outputs` (chunks of ceil(size / n), the last one smaller) as the explicit
    `split` sizes of Split-13: a constant when the axis size is known, else computed in the
    graph from the input's shape."""
    count = node.attributes.get_int("num_outputs", None)
    node.attributes.pop("num_outputs", None)
    if count is None or input_at(node, 1) is not None:
        return None
    axis = node.attributes.get_int("axis", 0)
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    size = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    graph = node.graph
    taken = main_graph_names(graph)
    base = node.name or "split"
    if isinstance(size, int):
        chunk = -(-size // count)
        sizes = [max(0, min(chunk, size - i * chunk)) for i in range(count)]
        if sizes == [size // count] * count:
            return None  # even: Split-13 without `split` splits the same way
        split = add_initializer(graph, taken, f"{base}_sizes", np.array(sizes, np.int64))
    else:
        def const(suffix: str, value: int) -> ir.Value:
            return add_initializer(graph, taken, f"{base}_{suffix}", np.array([value], np.int64))

        bounds = {"start": axis} if axis == -1 else {"start": axis, "end": axis + 1}
        dim = ir.node("Shape", [node.inputs[0]], bounds, num_outputs=1)
        chunk = ir.node("Div", [ir.node("Add", [dim.outputs[0], const("nm1", count - 1)], num_outputs=1).outputs[0],
                                const("n", count)], num_outputs=1)
        add = chunk.inputs[0].producer()
        rest = ir.node("Mul", [chunk.outputs[0], const("nm1b", count - 1)], num_outputs=1)
        last = ir.node("Sub", [dim.outputs[0], rest.outputs[0]], num_outputs=1)
        concat = ir.node("Concat", [chunk.outputs[0]] * (count - 1) + [last.outputs[0]], {"axis": 0}, num_outputs=1)
        for new in (dim, add, chunk, rest, last, concat):
            new.name = fresh_name(taken, f"{base}_sizes_{new.op_type.lower()}")
            graph.insert_before(node, new)
        split = concat.outputs[0]
    node.resize_inputs(2)
    node.replace_input_with(1, split)
    return None


def _lower_node(node: ir.Node, target: int) -> str | None:
    """Rewrite one node from a newer opset to `target` (< 18); a reason when it cannot."""
    op, attrs = node.op_type, node.attributes
    if op in _REDUCE_18 and target < 18:
        if input_at(node, 1) is not None:
            axes = const_array(input_at(node, 1))
            if axes is None:
                return f"{op} axes are computed"
            attrs["axes"] = ir.AttrInt64s("axes", [int(a) for a in axes.reshape(-1)])
            node.resize_inputs(1)
        elif attrs.get_int("noop_with_empty_axes", 0):
            return f"{op} with noop_with_empty_axes=1"
        attrs.pop("noop_with_empty_axes", None)
        return None
    if op == "Split" and target < 18:
        return _lower_split(node)
    if op == "GridSample" and target < 20:
        rank = node.inputs[0].shape.rank() if node.inputs[0] is not None and node.inputs[0].shape is not None else None
        if rank != 4:
            return f"GridSample on a {'rank-' + str(rank) if rank else 'non-4-D'} input (opset {target} samples 4-D only)"
        mode = attrs.get_string("mode", "linear")
        attrs["mode"] = ir.AttrString("mode", {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode))
        return None
    if op == "Pad" and input_at(node, 3) is not None:
        return "Pad with an axes input"
    if op == "Resize":
        if attrs.get_int("antialias", 0) or attrs.get_string("keep_aspect_ratio_policy", "stretch") != "stretch" \
                or attrs.get_ints("axes", None) is not None \
                or attrs.get_string("coordinate_transformation_mode", "half_pixel") == "half_pixel_symmetric":
            return "Resize uses opset-18/19 attributes"
        for key in ("antialias", "keep_aspect_ratio_policy"):
            attrs.pop(key, None)
        return None
    if op == "AveragePool":
        if any(d != 1 for d in attrs.get_ints("dilations", [])):
            return "AveragePool with dilations"
        attrs.pop("dilations", None)
        return None
    if op in ("ScatterElements", "ScatterND") and attrs.get_string("reduction", "none") in ("max", "min"):
        return f"{op} reduction={attrs.get_string('reduction')}"
    if op == "LpPool" and attrs.get_int("ceil_mode", 0):
        return "LpPool ceil_mode=1"
    if op == "LpPool":
        if any(d != 1 for d in attrs.get_ints("dilations", [])):
            return "LpPool with dilations"
        attrs.pop("dilations", None)
        attrs.pop("ceil_mode", None)
        return None
    return None
