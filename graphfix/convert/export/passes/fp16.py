"""Put float16 into the graph (TensorRT 11 is strongly typed) with fp32 inputs and outputs."""

from __future__ import annotations

__all__ = ["Float16Pass", "FP16_OPS", "BLOCK_OPS", "HEAD_NODE", "FP16_MAX", "type_check"]

import logging

import numpy as np
import onnx_ir as ir

from graphfix.convert.export.passes._util import fresh_name, main_graph_names, set_dtype
from graphfix.errors import GraphfixError
from graphfix.irutil import downstream_nodes

logger = logging.getLogger(__name__)

#: Largest finite float16; never onnxconverter-common's silent 1e4 clamp.
FP16_MAX = 65504.0
#: Smallest positive float16 (subnormal); smaller non-zero weights become 0.
FP16_TINY = 2.0**-24
#: The Gemm of graphfix's multi-label head; it and everything after it stay fp32.
HEAD_NODE = "graphfix_head"
#: Ops whose output type follows their float input and that are safe in fp16.
FP16_OPS = frozenset({
    "Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization", "LRN",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Mish", "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Abs",
    "Neg", "Sqrt", "Reciprocal", "Exp", "Erf", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split",
    "Slice", "Gather", "Pad", "Tile", "Expand", "Identity", "Dropout", "Gemm", "MatMul",
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "DepthToSpace", "SpaceToDepth",
})
#: Ops always kept in fp32 (wrapped in Casts) even though they take floats.
BLOCK_OPS = frozenset({
    "Resize", "Upsample", "Range", "CumSum", "TopK", "NonMaxSuppression", "RoiAlign",
    "Softmax", "LogSoftmax",
})

#: Ops that read only their input's shape: an fp16 value reaches them without a Cast.
ANY_TYPE_OPS = frozenset({"Shape", "Size"})
#: Initializers up to this many elements travel with the type check (shape constants for
#: data propagation); bigger ones are declared by type and shape only.
_CHECK_DATA_LIMIT = 1024

_FLOAT = ir.DataType.FLOAT
_HALF = ir.DataType.FLOAT16


class Float16Pass(ir.passes.InPlacePass):
    """Convert float32 compute to float16 inside the graph; keep fp32 I/O, Resize and the head.

    Cases:
        1. A node runs in fp16 when its op is in `FP16_OPS`, its first input is float32, it is
           not in `BLOCK_OPS` (Resize, Softmax...), not in `keep` (default: the graphfix head
           Gemm), not downstream of a kept node (the head's Sigmoid and thresholds) and not
           in `fp32_nodes` (kept fp32 alone; `export --fp16 auto` picks them).
        2. Its float32 initializer inputs become float16 (converted lazily at save time; a copy
           `<name>_fp16` when fp32 nodes read the same initializer). A node whose weights hold
           a value above 65504 stays fp32 and is listed in `overflow`; weights that flush to
           zero are counted in `underflow`.
        3. Casts are inserted where fp32 values enter fp16 nodes and where fp16 values reach
           fp32 nodes or graph outputs (not Shape/Size, which read only the shape); graph
           inputs and outputs keep float32 and their names.
        4. A node with an input of unknown dtype stays fp32 (it could not be given fp16), and a
           rank-3 Transpose whose perm starts with axis 1 stays fp32: onnxruntime 1.31's CPU
           NchwcTransformer crashes (SIGSEGV) creating a session on such an fp16 Transpose
           feeding a MatMul (torchvision's MultiheadAttention, seq-first).
        5. The result must pass onnx's strict type inference (`type_check`); a graph that does
           not is a bug of this pass and raises GraphfixError naming the node, before any
           session is created on it.

    `modified` is True when any node was converted. Run shape inference first so dtypes are
    known; values with unknown dtype are treated as non-float.
    """

    def __init__(self, keep: tuple[str, ...] = (HEAD_NODE,), block_ops: frozenset[str] = BLOCK_OPS,
                 fp32_nodes: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.keep = tuple(keep)
        self.fp32_nodes = frozenset(fp32_nodes)
        self.block_ops = block_ops
        self.overflow: list[dict] = []
        self.underflow: list[dict] = []
        self.converted: int = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self.overflow, self.underflow, self.converted = [], [], 0
        kept = self._kept_nodes(graph)
        half_nodes = [n for n in graph if n not in kept and self._wants_fp16(n)]
        if not half_nodes:
            return ir.passes.PassResult(model, False)
        half_set = set(half_nodes)
        taken = main_graph_names(graph)
        first = next(iter(graph))
        half_inits: dict[ir.Value, ir.Value] = {}
        to_half: dict[ir.Value, ir.Value] = {}
        converted_values: dict[ir.Value, None] = {}  # insertion-ordered: deterministic output
        for node in list(graph):
            if node not in half_set:
                continue
            for index, value in enumerate(node.inputs):
                if value is None or value.dtype != _FLOAT or value in converted_values:
                    continue
                if value.is_initializer() and value.const_value is not None:
                    new = half_inits.get(value)
                    if new is None:
                        new = self._half_initializer(graph, value, half_set, taken)
                        half_inits[value] = new
                else:
                    new = to_half.get(value)
                    if new is None:
                        new = _cast(graph, value, _HALF, taken, anchor=value.producer() or first,
                                    before=value.producer() is None)
                        to_half[value] = new
                if new is not value:
                    node.replace_input_with(index, new)
            for out in node.outputs:
                if out.dtype == _FLOAT:
                    set_dtype(out, _HALF)
                    converted_values[out] = None
            self.converted += 1
        # fp16 values read by fp32 nodes or graph outputs go back through a Cast to float32.
        to_float: dict[ir.Value, ir.Value] = {}
        for value in list(converted_values):
            for use in list(value.uses()):
                back = use.node.op_type == "Cast" and (use.node.name or "").endswith("_to_fp32")
                if use.node in half_set or use.node.op_type in ANY_TYPE_OPS or back:
                    continue
                new = to_float.get(value)
                if new is None:
                    new = _cast(graph, value, _FLOAT, taken, anchor=value.producer())
                    to_float[value] = new
                use.node.replace_input_with(use.idx, new)
            if value.is_graph_output():
                name = value.name
                value.name = fresh_name(taken, f"{name}_fp16")
                cast = _cast(graph, value, _FLOAT, taken, anchor=value.producer())
                for i, out in enumerate(graph.outputs):
                    if out is value:
                        graph.outputs[i] = cast
                cast.name = name
        from onnx_ir.passes.common import RemoveUnusedNodesPass, TopologicalSortPass

        RemoveUnusedNodesPass()(model)
        TopologicalSortPass()(model)
        type_check(model)
        logger.info("fp16: %d nodes converted, %d kept fp32 for overflow", self.converted, len(self.overflow))
        return ir.passes.PassResult(model, True)

    # ----- selection ---------------------------------------------------------------------
    def _kept_nodes(self, graph: ir.Graph) -> set[ir.Node]:
        seeds = [n for n in graph if n.name in self.keep]
        exact = {n for n in graph if n.name in self.fp32_nodes}
        return set(seeds) | exact | downstream_nodes(out for n in seeds for out in n.outputs)

    def _wants_fp16(self, node: ir.Node) -> bool:
        if node.domain not in ("", "ai.onnx") or node.op_type not in FP16_OPS or node.op_type in self.block_ops:
            return False
        if not node.inputs or node.inputs[0] is None or node.inputs[0].dtype != _FLOAT:
            return False
        if any(out.dtype is None for out in node.outputs):
            return False  # an output of unknown type could not be cast back: stay fp32
        if any(value is not None and value.dtype is None for value in node.inputs):
            return False  # an input of unknown type might be float32 left beside fp16 ones
        if node.op_type == "Transpose" and _ort_cpu_crashes(node):
            return False
        for value in node.inputs[1:]:
            if value is None or value.dtype != _FLOAT or value.const_value is None:
                continue
            peak = _max_abs(value.const_value)
            if peak > FP16_MAX:
                self.overflow.append({"node": node.name, "initializer": value.name, "max_abs": peak})
                return False
        return True

    def _half_initializer(self, graph: ir.Graph, value: ir.Value, half_set: set, taken: set[str]) -> ir.Value:
        source = value.const_value
        tiny = _count_tiny(source)
        if tiny:
            self.underflow.append({"initializer": value.name, "flushed_to_zero": tiny})
        lazy = ir.LazyTensor(
            lambda src=source: ir.tensor(src.numpy().astype(np.float16)),
            dtype=_HALF, shape=ir.Shape(source.shape), name=value.name,
        )
        if (all(use.node in half_set for use in value.uses()) and not value.is_graph_output()
                and not value.is_graph_input()):
            value.const_value = lazy
            set_dtype(value, _HALF)
            return value
        name = fresh_name(taken, f"{value.name}_fp16")
        lazy.name = name
        new = ir.Value(name=name, const_value=lazy)
        set_dtype(new, _HALF)
        new.shape = ir.Shape(source.shape)
        graph.register_initializer(new)
        return new


def _ort_cpu_crashes(node: ir.Node) -> bool:
    """True for a Transpose onnxruntime's CPU session cannot take in fp16 (see Float16Pass case 4)."""
    perm = node.attributes.get_ints("perm")
    return perm is not None and len(perm) == 3 and perm[0] == 1


def type_check(model: ir.Model) -> None:
    """Run onnx's strict shape/type inference (with data propagation) on `model`.

    Initializers above `_CHECK_DATA_LIMIT` elements are declared as typed inputs for the check
    (nothing big is serialized; fp16 weights stay lazy); the model is left as it was.

    Raises:
        GraphfixError(kind="failed"): the first type error, with the node onnx names.
    """
    import onnx

    graph = model.graph
    order = list(graph.initializers.values())
    big = [v for v in order if v.const_value is not None and v.const_value.size > _CHECK_DATA_LIMIT
           and not v.is_graph_input()]
    for value in big:
        graph.initializers.pop(value.name)
        graph.inputs.append(value)
    try:
        proto = ir.serde.serialize_model(model)
    finally:
        for _ in big:
            graph.inputs.pop()
        graph.initializers.clear()
        for value in order:
            graph.register_initializer(value)
    try:
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise GraphfixError(f"the fp16 graph does not type-check: {first}", kind="failed",
                            hint="export without --fp16 and report this model to the graphfix developers") from None


def _max_abs(tensor) -> float:
    array = tensor.numpy()
    if array.size == 0:
        return 0.0
    return float(np.max(np.abs(array)))


def _count_tiny(tensor) -> int:
    array = tensor.numpy()
    return int(np.count_nonzero((np.abs(array) < FP16_TINY) & (array != 0)))


def _cast(graph: ir.Graph, value: ir.Value, to: ir.DataType, taken: set[str], *, anchor, before: bool = False) -> ir.Value:
    suffix = "_to_fp16" if to == _HALF else "_to_fp32"
    base = value.name or "value"
    node = ir.node("Cast", [value], {"to": int(to)}, name=fresh_name(taken, base + suffix), num_outputs=1)
    out = node.outputs[0]
    out.name = fresh_name(taken, base + suffix.replace("_to_", "_"))
    set_dtype(out, to)
    out.shape = value.shape
    if before:
        graph.insert_before(anchor, node)
    else:
        graph.insert_after(anchor, node)
    return out
