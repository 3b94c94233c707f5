"""Turn a parsed MXNet symbol plus its params into an onnx-ir model.

1. Every op is looked up in the table first; all unknown ops are reported together in one
   `unsupported_op` error, before params are read or nodes built.
2. Nodes are converted in file (topological) order by their converter, which emits onnx-ir
   nodes and initializers through `Context` (built directly, with typed attributes: onnx-ir's
   Tape infers attribute types through Protocol isinstance checks, which cost more than the
   rest of the conversion on a 100 MB model). Variables become initializers (params, zero copy) or graph
   inputs (data) only when a converter asks for them, so training-only inputs (`softmax_label`)
   never appear.
3. Each emitted node's output types are inferred with ONNX's per-node shape inference, so
   converters that need a rank or a shape (Reshape codes, PReLU, L2Normalization) can ask for it.
   The first dim of every data input is the symbolic dim "batch".
4. MXNet 1.x has no 0-d arrays: a result that would be 0-d (a full reduction, a squeeze of an
   all-1 array) has shape (1,). One rule after every converter keeps that (`keep_mxnet_rank`):
   a rank-0 output is reshaped to (1,), and an output whose rank depends on runtime dims (a
   squeeze with no axis over a symbolic batch) gets a runtime "at least 1-d" reshape.
"""

from __future__ import annotations

__all__ = ["Context", "build_model"]

import ast
import logging
from typing import Any, Sequence

import numpy as np
import onnx
import onnx.defs
import onnx.helper
import onnx.shape_inference
import onnx_ir as ir

from graphfix.convert._onnx import DEFAULT_OPSET, ir_version_for
from graphfix.convert.mxnet._params import DTYPE_CODES, ParamsFile
from graphfix.convert.mxnet._symbol import Symbol, SymbolNode
from graphfix.convert.mxnet._table import CONVERTERS, load_all
from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)

_INFER_DATA_LIMIT = 64  # constants up to this many elements are passed to shape inference
#: MXNet ops whose output has their first input's shape (walked by `shape_hint`).
_SHAPE_KEEPING = frozenset({
    "BatchNorm", "Activation", "LeakyReLU", "Dropout", "_copy", "identity", "BlockGrad", "clip", "Cast",
    "_plus_scalar", "_minus_scalar", "_rminus_scalar", "_mul_scalar", "_div_scalar", "_rdiv_scalar",
    "relu", "sigmoid", "tanh",
})

#: ONNX ops whose output has the type of their first input (inputs beyond it are per-channel).
_SAME_SHAPE_OPS = frozenset({
    "Relu", "Sigmoid", "Tanh", "Softplus", "Softsign", "LeakyRelu", "Elu", "Selu", "Erf", "Exp", "Log",
    "Sqrt", "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Identity", "BatchNormalization", "Softmax",
    "LogSoftmax", "Clip", "LRN",
})
#: Elementwise binaries: same type when both inputs have the same shape.
_BINARY_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"})
#: Ops whose output rank is known even when shape inference has nothing to work with.
_RANK2_OPS = {"Flatten", "Gemm"}


class Context:
    """What a converter sees: the current node's attributes, inputs, params and an emitter.

    Converters call `input`, `param`, `attr_*`, `op`, `const`, `shape`/`rank` and `fail`.
    """

    def __init__(
        self,
        symbol: Symbol,
        params: ParamsFile | None,
        *,
        path: str | None,
        input_shapes: dict[str, tuple[int, ...]] | None,
        opset: int = DEFAULT_OPSET,
    ) -> None:
        self.symbol = symbol
        self.params = params
        self.path = path
        self.opset = opset
        self.input_shapes = dict(input_shapes or {})
        self.nodes: list[ir.Node] = []
        self.initializers: list[ir.Value] = []
        self.graph_inputs: list[ir.Value] = []
        #: Names of weights that became graph inputs (missing from params, shape given).
        self.weight_inputs: list[str] = []
        self._vars: dict[str, ir.Value] = {}
        self._values: dict[tuple[int, int], ir.Value] = {}
        self._used: set[str] = {n.name for n in symbol.nodes if n.is_variable}
        self._node_used: set[str] = set()
        self.node: SymbolNode | None = None
        self.name = ""
        self._opset_ids = [onnx.helper.make_opsetid("", opset)]

    # ----- names ---------------------------------------------------------------------------
    def unique(self, base: str, *, node: bool = False) -> str:
        """`base`, or `base_1`, `base_2`... whichever is not yet used; marks it used.

        Value names and node names are separate namespaces (`node=True` for node names).
        """
        used = self._node_used if node else self._used
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    # ----- attributes ----------------------------------------------------------------------
    def has_attr(self, key: str) -> bool:
        return key in self.node.attrs

    def attr_str(self, key: str, default: str | None = None) -> str | None:
        value = self.node.attrs.get(key)
        return default if value is None or value == "None" else value

    def attr_bool(self, key: str, default: bool = False) -> bool:
        value = self.attr_str(key)
        if value is None:
            return default
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise self.fail(f"attribute {key}={value!r} is not a boolean")

    def attr_float(self, key: str, default: float | None = None) -> float | None:
        value = self.attr_str(key)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise self.fail(f"attribute {key}={value!r} is not a number") from None

    def attr_int(self, key: str, default: int | None = None) -> int | None:
        value = self.attr_float(key)
        return default if value is None else int(value)

    def attr_tuple(self, key: str, default: tuple | None = None) -> tuple | None:
        """`"(3, 3)"`, `"[1,2]"`, `"3"` or `"()"` -> a tuple of ints (None stays None)."""
        value = self.attr_str(key)
        if value is None:
            return default
        try:
            parsed = ast.literal_eval(value.replace("L", ""))
        except (ValueError, SyntaxError):
            raise self.fail(f"attribute {key}={value!r} is not a tuple") from None
        if isinstance(parsed, (int, float)):
            return (int(parsed),)
        if parsed is None:
            return default
        return tuple(None if v is None else int(v) for v in parsed)

    # ----- inputs ---------------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.node.inputs)

    def input_node(self, i: int) -> SymbolNode:
        return self.symbol.nodes[self.node.inputs[i][0]]

    def input(self, i: int) -> ir.Value:
        """The ONNX value of input `i` (a variable becomes an initializer or a graph input)."""
        if i >= len(self.node.inputs):
            raise self.fail(f"needs input {i} but has {len(self.node.inputs)}")
        return self.value_of(self.node.inputs[i])

    def value_of(self, entry: tuple[int, int]) -> ir.Value:
        nid, idx = entry
        src = self.symbol.nodes[nid]
        if src.is_variable:
            return self._variable(src)
        try:
            return self._values[(nid, idx)]
        except KeyError:
            raise self.fail(f"uses output {idx} of node {src.name!r} ({src.op}), which has no such output") from None

    def param(self, i: int, shape: Sequence[int | None] | None = None, what: str = "weight") -> np.ndarray | None:
        """The params array of variable input `i`, as float32, checked against `shape`.

        None where the weight is a graph input (not in params, its shape given by --input-shape)
        or computed by another node: `weight(i)` is its value then.
        """
        value = self.weight(i, shape, what)
        if value.const_value is None:
            return None
        return value.const_value.numpy()

    def weight(self, i: int, shape: Sequence[int | None] | None = None, what: str = "weight") -> ir.Value:
        """The value of weight input `i`, checked against `shape` (None: any size).

        A variable in params is an initializer named after it (shared by every user). A variable
        missing from params becomes a graph input when `--input-shape NAME:dims` gives its shape
        (or the JSON stores a complete `__shape__`); without a shape it is an error naming it.
        A weight computed by another node is that node's output.
        """
        if i >= len(self.node.inputs):
            raise self.fail(f"has no {what} input (input {i})")
        src = self.input_node(i)
        if not src.is_variable:
            value = self.input(i)
            self._check_weight_shape(src.name, self.shape(value), shape, what)
            return value
        value = self._vars.get(src.name)
        if value is None:
            arr = self.params.lookup(src.name) if self.params is not None else None
            if arr is None:
                value = self._weight_input(src, what)
            else:
                self._check_weight_shape(src.name, arr.shape, shape, what)
                value = self._variable(src)
        self._check_weight_shape(src.name, self.shape(value), shape, what)
        return value

    def _check_weight_shape(self, name: str, actual: Sequence | None, shape: Sequence | None, what: str) -> None:
        if shape is None or actual is None:
            return
        ok = len(actual) == len(shape) and all(
            s is None or not isinstance(d, int) or s == d for s, d in zip(shape, actual))
        if not ok:
            want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
            raise self.fail(f"{what} {name!r} has shape {tuple(actual)} but the graph needs {want}")

    def _weight_input(self, src: SymbolNode, what: str) -> ir.Value:
        """A weight missing from params as a graph input of exactly the given shape."""
        dims = self.input_shapes.get(src.name) or _stored_shape(src)
        if not dims or not all(d > 0 for d in dims):
            hint = "pass --params" if self.params is None else f"the params file holds no arg:{src.name} or aux:{src.name}"
            raise self.fail(
                f"{what} {src.name!r} is missing from params",
                hint=f"{hint}, or pass --input-shape {src.name}:dims to make it a graph input",
            )
        value = ir.Value(name=src.name, type=ir.TensorType(_data_dtype(src)), shape=ir.Shape([int(d) for d in dims]))
        self.graph_inputs.append(value)
        self.weight_inputs.append(src.name)
        self._vars[src.name] = value
        return value

    def _variable(self, src: SymbolNode) -> ir.Value:
        value = self._vars.get(src.name)
        if value is not None:
            return value
        arr = self.params.lookup(src.name) if self.params is not None else None
        if arr is not None:
            arr = _as_float32(arr)
            value = self.initializer(arr, src.name)
        else:
            value = ir.Value(name=src.name, type=ir.TensorType(_data_dtype(src)), shape=self._input_shape(src))
            self.graph_inputs.append(value)
        self._vars[src.name] = value
        return value

    def _input_shape(self, src: SymbolNode) -> ir.Shape | None:
        dims: tuple | None = self.input_shapes.get(src.name)
        if dims is None and "" in self.input_shapes:
            dims = self.input_shapes[""]
        if dims is None:
            dims = _stored_shape(src)
        if dims is None:
            dims = self.shape_hint(src)
            if dims is None:
                raise GraphfixError(
                    f"cannot tell the shape of input {src.name!r} (the JSON stores none)",
                    kind="usage", path=self.path, hint=f"pass --input-shape {src.name}:1,3,224,224",
                )
        out: list[Any] = [ir.SymbolicDim("batch")]
        out += [int(d) if d and d > 0 else ir.SymbolicDim(None) for d in dims[1:]]
        return ir.Shape(out)

    def shape_hint(self, src: SymbolNode) -> tuple[int, ...] | None:
        """A data input's rank (and channels) from the first Convolution/Pooling it reaches.

        The walk follows first inputs through ops that keep the shape (BatchNorm on the data,
        activations, scalar arithmetic...). Unknown dims are 0. Used only where neither
        `input_shape` nor `__shape__` gives a shape.
        """
        frontier, seen = [src.index], set()
        while frontier:
            index = frontier.pop(0)
            for node in self.symbol.nodes:
                if node.is_variable or not node.inputs or node.inputs[0][0] != index or node.index in seen:
                    continue
                seen.add(node.index)
                if node.op in ("Convolution", "Deconvolution", "Pooling") and "kernel" in node.attrs:
                    return self._hint_from_kernel(node)
                if node.op in _SHAPE_KEEPING:
                    frontier.append(node.index)
        return None

    def _hint_from_kernel(self, node: SymbolNode) -> tuple[int, ...] | None:
        try:
            kernel = ast.literal_eval(node.attrs["kernel"])
        except (ValueError, SyntaxError):
            return None
        dims = [0] * ((1 if isinstance(kernel, int) else len(kernel)) + 2)
        if node.op == "Convolution" and len(node.inputs) > 1 and self.params is not None:
            w = self.params.lookup(self.symbol.nodes[node.inputs[1][0]].name)
            if w is not None and w.ndim == len(dims):
                dims[1] = int(w.shape[1]) * int(node.attrs.get("num_group", "1"))
        return tuple(dims)

    # ----- emitting -------------------------------------------------------------------------
    def op(
        self,
        op_type: str,
        inputs: Sequence[ir.Value | None],
        attributes: dict[str, Any] | None = None,
        *,
        suffix: str | None = None,
        num_outputs: int = 1,
    ) -> Any:
        """Emit one ONNX node; the main node of a converter takes the MXNet name (no suffix).

        Returns:
            The output value, or a list of them when `num_outputs` > 1.
        """
        base = self.name if suffix is None else f"{self.name}_{suffix}"
        name = self.unique(base, node=True)
        attrs = {k: (int(v) if isinstance(v, bool) else v) for k, v in (attributes or {}).items() if v is not None}
        node = ir.Node(
            "", op_type, list(inputs), attributes=[_attr(k, v) for k, v in attrs.items()],
            num_outputs=num_outputs, name=name,
        )
        self.nodes.append(node)
        outs = node.outputs
        for k, out in enumerate(outs):
            out.name = self.unique(name if num_outputs == 1 else f"{name}_{k}")
        self._infer(outs[0].producer())
        return outs[0] if num_outputs == 1 else list(outs)

    def const(self, array: Any, suffix: str, dtype: Any = np.float32) -> ir.Value:
        """A new initializer named `<node>_<suffix>`."""
        arr = np.asarray(array, dtype=dtype)
        return self.initializer(arr, self.unique(f"{self.name}_{suffix}"))

    def initializer(self, arr: np.ndarray, name: str) -> ir.Value:
        """Wrap `arr` (no copy) as an initializer named `name`."""
        tensor = ir.Tensor(arr, name=name)
        value = ir.Value(name=name, type=ir.TensorType(tensor.dtype), shape=ir.Shape(arr.shape), const_value=tensor)
        self.initializers.append(value)
        return value

    def np_dtype(self, value: ir.Value) -> np.dtype:
        """`value`'s element type as a NumPy dtype (float32 where unknown)."""
        return np.dtype(np.float32) if value.dtype is None else np.dtype(value.dtype.numpy())

    def ints(self, values: Sequence[int], suffix: str) -> ir.Value:
        """An int64 1-D initializer (axes, shapes, starts...)."""
        return self.const(np.asarray(list(values), dtype=np.int64).reshape(-1), suffix, dtype=np.int64)

    # ----- shapes ---------------------------------------------------------------------------
    def shape(self, value: ir.Value) -> tuple | None:
        """Value's shape: ints, "batch" (or other names) for symbolic dims, None for unknown."""
        if value.shape is None:
            if value.const_value is not None:
                return tuple(value.const_value.shape)
            return None
        out = []
        for d in value.shape:
            out.append(d if isinstance(d, int) else d.value)
        return tuple(out)

    def rank(self, value: ir.Value) -> int | None:
        shape = self.shape(value)
        return None if shape is None else len(shape)

    def need_rank(self, value: ir.Value, why: str) -> int:
        rank = self.rank(value)
        if rank is None:
            raise self.fail(
                f"needs the rank of its input for {why}, which is unknown",
                kind="usage",
                hint="pass the input shape, e.g. --input-shape data:1,3,224,224",
            )
        return rank

    def need_shape(self, value: ir.Value, why: str) -> tuple:
        shape = self.shape(value)
        if shape is None or any(d is None for d in shape[1:]):
            raise self.fail(
                f"needs the shape of its input for {why}, which is unknown",
                kind="usage",
                hint="pass the input shape, e.g. --input-shape data:1,3,224,224",
            )
        return shape

    def _infer(self, node: ir.Node) -> None:
        if self._infer_same_shape(node):
            return
        try:
            schema = onnx.defs.get_schema(node.op_type, self.opset, node.domain)
        except onnx.defs.SchemaError:
            return
        proto = ir.serde.serialize_node(node)
        types: dict[str, onnx.TypeProto] = {}
        data: dict[str, onnx.TensorProto] = {}
        for v in node.inputs:
            if v is None or v.name in types:
                continue
            if v.const_value is not None:
                t = v.const_value
                types[v.name] = onnx.helper.make_tensor_type_proto(int(t.dtype), list(t.shape))
                if t.size <= _INFER_DATA_LIMIT:
                    data[v.name] = ir.serde.serialize_tensor(t)
                    data[v.name].name = v.name
            elif v.dtype is not None:
                dims = None if v.shape is None else [d if isinstance(d, int) else d.value for d in v.shape]
                types[v.name] = onnx.helper.make_tensor_type_proto(int(v.dtype), dims)
        try:
            result = onnx.shape_inference.infer_node_outputs(
                schema, proto, types, data, opset_imports=self._opset_ids, ir_version=ir_version_for(self.opset)
            )
        except Exception as exc:  # inconsistent shapes: a user's file, not a bug
            raise self.fail(f"shapes do not fit ({str(exc).strip().splitlines()[-1]})") from exc
        for out in node.outputs:
            tp = result.get(out.name)
            if tp is None or not tp.HasField("tensor_type"):
                continue
            tt = tp.tensor_type
            if tt.elem_type:
                out.dtype = ir.DataType(tt.elem_type)
            if tt.HasField("shape"):
                dims: list[Any] = []
                for d in tt.shape.dim:
                    if d.HasField("dim_value"):
                        dims.append(d.dim_value)
                    else:
                        dims.append(ir.SymbolicDim(d.dim_param or None))
                out.shape = ir.Shape(dims)
        if node.outputs[0].shape is None and node.op_type in _RANK2_OPS:
            node.outputs[0].shape = ir.Shape([ir.SymbolicDim(None), ir.SymbolicDim(None)])
        if node.outputs[0].dtype is None and node.inputs and node.inputs[0] is not None:
            node.outputs[0].dtype = node.inputs[0].dtype

    def _infer_same_shape(self, node: ir.Node) -> bool:
        """Shape-preserving ops copy their input's type (cheaper than ONNX inference)."""
        first = node.inputs[0] if node.inputs else None
        if first is None or first.shape is None or len(node.outputs) != 1:
            return False
        if node.op_type in _SAME_SHAPE_OPS:
            pass
        elif node.op_type in _BINARY_OPS:
            other = node.inputs[1]
            other_shape = None if other is None else (other.shape if other.const_value is None else other.const_value.shape)
            if other_shape is None or list(other_shape) != list(first.shape) or other.dtype != first.dtype:
                return False
        else:
            return False
        out = node.outputs[0]
        out.dtype = first.dtype
        out.shape = ir.Shape(list(first.shape))
        return True

    # ----- errors ---------------------------------------------------------------------------
    def fail(self, message: str, *, kind: str = "bad_input", hint: str | None = None) -> GraphfixError:
        """A GraphfixError about the current node (raise it)."""
        node = f"{self.node.name or '#' + str(self.node.index)} ({self.node.op})" if self.node else None
        return GraphfixError(message, kind=kind, path=self.path, node=node, hint=hint)


def _attr(name: str, value: Any) -> ir.Attr:
    """A typed onnx-ir attribute from a Python value."""
    if isinstance(value, (bool, int, np.integer)):
        return ir.AttrInt64(name, int(value))
    if isinstance(value, (float, np.floating)):
        return ir.AttrFloat32(name, float(value))
    if isinstance(value, str):
        return ir.AttrString(name, value)
    values = list(value)
    if all(isinstance(v, (int, np.integer)) for v in values):
        return ir.AttrInt64s(name, [int(v) for v in values])
    return ir.AttrFloat32s(name, [float(v) for v in values])


def _stored_shape(src: SymbolNode) -> tuple[int, ...] | None:
    """The `__shape__` a JSON stores for a variable (unknown dims are 0), or None."""
    try:
        parsed = ast.literal_eval(src.hidden.get("__shape__", "None"))
        return tuple(int(d) for d in parsed) if parsed else None
    except (ValueError, SyntaxError, TypeError):
        return None


def _as_float32(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.float32 and arr.dtype.isnative:
        return arr
    logger.debug("casting a %s param to float32", arr.dtype)
    return arr.astype(np.float32)


def _data_dtype(src: SymbolNode) -> ir.DataType:
    code = src.hidden.get("__dtype__")
    if code is not None:
        try:
            name = DTYPE_CODES[int(code)]
            return ir.DataType.from_numpy(np.dtype(name))
        except (KeyError, ValueError, TypeError):
            pass
    return ir.DataType.FLOAT


def check_supported(symbol: Symbol, path: str | None) -> None:
    """Raise one `unsupported_op` error listing every op without a converter and its nodes."""
    load_all()
    missing: dict[str, list[str]] = {}
    for node in symbol.nodes:
        if not node.is_variable and node.op not in CONVERTERS:
            missing.setdefault(node.op, []).append(node.name or f"#{node.index}")
    if missing:
        parts = []
        for op, names in sorted(missing.items()):
            shown = ", ".join(names[:5]) + (f", ... ({len(names)} nodes)" if len(names) > 5 else "")
            parts.append(f"{op} ({shown})")
        raise GraphfixError(
            f"{len(missing)} unsupported MXNet op{'s' if len(missing) > 1 else ''}: " + "; ".join(parts),
            kind="unsupported_op",
            path=path,
            hint="see docs/mxnet-supported-ops.md",
        )


def _node_names(symbol: Symbol) -> dict[int, str]:
    """Unique ONNX-safe base names for op nodes: empty names get `<op>_<index>`, dups a suffix."""
    used: set[str] = {n.name for n in symbol.nodes if n.is_variable}
    out: dict[int, str] = {}
    for node in symbol.nodes:
        if node.is_variable:
            continue
        base = node.name or f"{node.op.strip('_')}_{node.index}"
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        out[node.index] = name
    return out


def build_model(
    symbol: Symbol,
    params: ParamsFile | None,
    *,
    path: str | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    opset: int = DEFAULT_OPSET,
) -> ir.Model:
    """Convert a parsed symbol and params to an onnx-ir model (no metadata)."""
    check_supported(symbol, path)
    ctx = Context(symbol, params, path=path, input_shapes=input_shapes, opset=opset)
    names = _node_names(symbol)
    needed = _needed_nodes(symbol)
    for node in symbol.nodes:
        if node.is_variable or node.index not in needed:
            continue
        ctx.node = node
        ctx.name = names[node.index]
        conv = CONVERTERS[node.op]
        check_values(ctx, conv.values)
        try:
            outs = conv.fn(node, ctx)
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError) as exc:
            # a converter meeting attributes it cannot read (missing, wrong type or range)
            raise ctx.fail(f"cannot convert: malformed or unsupported attributes ({type(exc).__name__}: {exc})") from exc
        if isinstance(outs, ir.Value):
            outs = [outs]
        for k, value in enumerate(outs):
            ctx._values[(node.index, k)] = keep_mxnet_rank(ctx, value)
    ctx.node = None
    order = {n.name: n.index for n in symbol.nodes if n.is_variable}
    ctx.graph_inputs.sort(key=lambda v: order.get(v.name, 0))  # MXNet's list_arguments() order
    _check_input_shapes(ctx, path)
    outputs = _graph_outputs(ctx, symbol, names)
    graph = ir.Graph(
        ctx.graph_inputs,
        outputs,
        nodes=ctx.nodes,
        initializers=ctx.initializers,
        opset_imports={"": opset},
        name=_graph_name(path),
    )
    return ir.Model(graph, ir_version=ir_version_for(opset), producer_name="graphfix")


def keep_mxnet_rank(ctx: Context, value: ir.Value) -> ir.Value:
    """`value`, or `value` reshaped to (1,) where it would be 0-d (MXNet 1.x returns (1,) there).

    A static rank 0 becomes a Reshape to [1]. An unknown rank (only where it depends on runtime
    dims, e.g. a squeeze with no axis over a symbolic batch that may be 1) becomes a runtime
    reshape to the shape itself, or [1] when that shape is empty.
    """
    rank = ctx.rank(value)
    if rank is None and (value.producer() is None or value.const_value is not None):
        return value
    if rank is None:
        shape = ctx.op("Shape", [value], suffix="shape")
        one = ctx.ints([1], "one")
        padded = ctx.op("Concat", [one, shape], {"axis": 0}, suffix="padded")
        start = ctx.op("Min", [ctx.op("Shape", [shape], suffix="rank"), one], suffix="start")
        ends = ctx.ints([np.iinfo(np.int64).max], "end")
        dims = ctx.op("Slice", [padded, start, ends], suffix="dims")
        return ctx.op("Reshape", [value, dims], suffix="at_least_1d")
    if rank == 0:
        return ctx.op("Reshape", [value, ctx.ints([1], "shape_1d")], suffix="at_least_1d")
    return value


def check_values(ctx: Context, values: dict[str, tuple[Any, ...]]) -> None:
    """Refuse, by name, an attribute value outside the converter's declared `values`."""
    for key, allowed in values.items():
        if key not in ctx.node.attrs:
            continue
        kind = next((type(v) for v in allowed if v is not None), str)
        if kind is bool:
            value: Any = ctx.attr_bool(key)
        elif kind is int:
            value = ctx.attr_int(key)
        else:
            value = ctx.attr_str(key)
        if value not in allowed:
            shown = ", ".join("unset" if v is None else repr(v) for v in allowed)
            raise ctx.fail(f"{key}={value!r} is not supported", kind="unsupported_op", hint=f"supported: {shown}")


def is_label_name(name: str) -> bool:
    """A training label input's name (`softmax_label`, `*_label`, `label`)."""
    return name == "label" or name.endswith("_label")


def _check_input_shapes(ctx: Context, path: str | None) -> None:
    """`input_shape` must name real inputs: data inputs, weights that became graph inputs, or
    label inputs (accepted and dropped); "" only where there is exactly one data input."""
    names = [v.name for v in ctx.graph_inputs]
    data = [n for n in names if n not in ctx.weight_inputs]
    unknown = [k for k in ctx.input_shapes if k and k not in names and not is_label_name(k)]
    if unknown:
        raise GraphfixError(
            f"--input-shape names {', '.join(unknown)}, which is not an input of the graph", kind="usage", path=path,
            hint=f"data inputs: {', '.join(data) or 'none'}",
        )
    if "" in ctx.input_shapes and len(data) > 1:
        raise GraphfixError(
            "--input-shape without a name, but the model has several data inputs", kind="usage", path=path,
            hint=f"name each one, e.g. {data[0]}:1,3,224,224",
        )
    dropped = [k for k in ctx.input_shapes if k and k not in names]
    if dropped:
        logger.info("--input-shape %s: label input%s, dropped", ", ".join(dropped), "s" if len(dropped) > 1 else "")
    if ctx.weight_inputs:
        shown = ", ".join(f"{v.name} {list(ctx.shape(v))}" for v in ctx.graph_inputs if v.name in ctx.weight_inputs)
        logger.warning(
            "%s: %d weight%s not in params, now graph input%s: %s",
            path or "mxnet", len(ctx.weight_inputs), "s" if len(ctx.weight_inputs) > 1 else "",
            "s" if len(ctx.weight_inputs) > 1 else "", shown,
        )


def _needed_nodes(symbol: Symbol) -> set[int]:
    """Indices of nodes the heads depend on (dead branches are not converted)."""
    needed: set[int] = set()
    stack = [nid for nid, _ in symbol.heads]
    while stack:
        nid = stack.pop()
        if nid in needed:
            continue
        needed.add(nid)
        stack.extend(i for i, _ in symbol.nodes[nid].inputs)
    return needed


def _graph_outputs(ctx: Context, symbol: Symbol, names: dict[int, str]) -> list[ir.Value]:
    """The heads as graph outputs, named `<node>_output` like MXNet's list_outputs()."""
    outputs: list[ir.Value] = []
    counts: dict[int, int] = {}
    for nid, _ in symbol.heads:
        counts[nid] = counts.get(nid, 0) + 1
    for nid, idx in symbol.heads:
        node = symbol.nodes[nid]
        value = ctx.value_of((nid, idx))
        n_out = sum(1 for k in ctx._values if k[0] == nid)
        base = node.name if node.is_variable else names[nid]
        wanted = f"{base}_output" if n_out <= 1 else f"{base}_output{idx}"
        if value.producer() is None or value in outputs or value.is_graph_output():
            ctx.node, ctx.name = node, base
            value = ctx.op("Identity", [value], suffix="identity")
            ctx.node = None
        if value.name != wanted:
            ctx._used.discard(value.name)
            value.name = ctx.unique(wanted)
        outputs.append(value)
    return outputs


def _graph_name(path: str | None) -> str:
    import os

    if not path:
        return "mxnet"
    stem = os.path.basename(path)
    for suffix in ("-symbol.json", ".json"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem
