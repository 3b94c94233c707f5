"""Converters for MXNet's arithmetic ops: elementwise/broadcast binaries, scalar ops, reductions.

Each converter is `(node, ctx) -> list[ir.Value]` (see `_driver.Context`).
"""

from __future__ import annotations

__all__: list[str] = []

from graphfix.convert.mxnet._table import converter

_BINARY = {
    "Add": ("elemwise_add", "_Plus", "_plus", "_add", "broadcast_add", "broadcast_plus"),
    "Sub": ("elemwise_sub", "_Minus", "_minus", "_sub", "broadcast_sub", "broadcast_minus"),
    "Mul": ("elemwise_mul", "_Mul", "_mul", "broadcast_mul"),
    "Div": ("elemwise_div", "_Div", "_div", "broadcast_div"),
    "Max": ("_maximum", "broadcast_maximum", "_Maximum"),
    "Min": ("_minimum", "broadcast_minimum", "_Minimum"),
    "Pow": ("_power", "broadcast_power", "_Power"),
}


def _register_binary(onnx_op: str, names: tuple[str, ...]) -> None:
    def convert_binary(node, ctx):
        return [ctx.op(onnx_op, [ctx.input(0), ctx.input(1)])]

    convert_binary.__name__ = f"convert_{onnx_op.lower()}"
    converter(*names, onnx=onnx_op, notes="NumPy-style broadcasting")(convert_binary)


for _op, _names in _BINARY.items():
    _register_binary(_op, _names)


@converter("add_n", "ElementWiseSum", "_sum", onnx="Sum")
def convert_add_n(node, ctx):
    return [ctx.op("Sum", [ctx.input(i) for i in range(ctx.num_inputs)])]


# scalar ops: (ONNX op, scalar on the left) -> MXNet names (1.x name first, then the 0.x one)
_SCALAR = {
    ("Add", False): ("_plus_scalar", "_PlusScalar"),
    ("Sub", False): ("_minus_scalar", "_MinusScalar"),
    ("Sub", True): ("_rminus_scalar", "_RMinusScalar"),
    ("Mul", False): ("_mul_scalar", "_MulScalar"),
    ("Div", False): ("_div_scalar", "_DivScalar"),
    ("Div", True): ("_rdiv_scalar", "_RDivScalar"),
    ("Pow", False): ("_power_scalar", "_PowerScalar"),
    ("Pow", True): ("_rpower_scalar", "_RPowerScalar"),
    ("Max", False): ("_maximum_scalar", "_MaximumScalar"),
    ("Min", False): ("_minimum_scalar", "_MinimumScalar"),
}


def _register_scalar(names: tuple[str, ...], onnx_op: str, left: bool) -> None:
    def convert_scalar(node, ctx):
        x = ctx.input(0)
        # MXNet casts the scalar to the data's type (DType(scalar)): int data keeps int results.
        s = ctx.const(ctx.attr_float("scalar", 1.0), "scalar", dtype=ctx.np_dtype(x))
        return [ctx.op(onnx_op, [s, x] if left else [x, s])]

    convert_scalar.__name__ = f"convert{names[0]}"
    converter(*names, onnx=onnx_op, notes=("scalar first" if left else "scalar second") + ", in the data's type")(
        convert_scalar)


for (_op, _left), _names in _SCALAR.items():
    _register_scalar(_names, _op, _left)


_UNARY = {
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "softsign": "Softsign",
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "abs": "Abs",
    "negative": "Neg",
    "reciprocal": "Reciprocal",
    "erf": "Erf",
    "floor": "Floor",
    "ceil": "Ceil",
}


def _register_unary(name: str, onnx_op: str) -> None:
    def convert_unary(node, ctx):
        return [ctx.op(onnx_op, [ctx.input(0)])]

    convert_unary.__name__ = f"convert_{name}"
    converter(name, onnx=onnx_op)(convert_unary)


for _name, _op in _UNARY.items():
    _register_unary(_name, _op)


@converter("square", onnx="Mul")
def convert_square(node, ctx):
    x = ctx.input(0)
    return [ctx.op("Mul", [x, x])]


@converter("clip", onnx="Clip", notes="a_min, a_max (in the data's type)")
def convert_clip(node, ctx):
    x = ctx.input(0)
    lo = ctx.const(ctx.attr_float("a_min"), "min", dtype=ctx.np_dtype(x))
    hi = ctx.const(ctx.attr_float("a_max"), "max", dtype=ctx.np_dtype(x))
    return [ctx.op("Clip", [x, lo, hi])]


def _reduce_axes(ctx, x) -> list[int] | None:
    """The axes reduced (None: all). MXNet 1.x reduces every axis when `axis` is unset or empty,
    `exclude` or not; `exclude` reduces the axes not listed."""
    axis = ctx.attr_tuple("axis")
    exclude = ctx.attr_bool("exclude", False)
    if axis is None or len(axis) == 0:
        return None
    if exclude:
        rank = ctx.need_rank(x, "exclude=True")
        keep = {a % rank for a in axis}
        return [a for a in range(rank) if a not in keep]
    return list(axis)


@converter("mean", onnx="ReduceMean", notes="axis, keepdims, exclude")
def convert_mean(node, ctx):
    x = ctx.input(0)
    axes = _reduce_axes(ctx, x)
    keep = int(ctx.attr_bool("keepdims", False))
    if axes == []:
        return [ctx.op("Identity", [x])]
    attrs = {"keepdims": keep}
    if axes is not None:
        attrs["axes"] = axes
    return [ctx.op("ReduceMean", [x], attrs)]


@converter("sum", "sum_axis", onnx="ReduceSum", notes="axis, keepdims, exclude")
def convert_sum(node, ctx):
    x = ctx.input(0)
    axes = _reduce_axes(ctx, x)
    keep = int(ctx.attr_bool("keepdims", False))
    if axes == []:
        return [ctx.op("Identity", [x])]
    inputs = [x] if axes is None else [x, ctx.ints(axes, "axes")]
    return [ctx.op("ReduceSum", inputs, {"keepdims": keep})]


@converter("max", "max_axis", onnx="ReduceMax", notes="axis, keepdims, exclude")
def convert_max(node, ctx):
    x = ctx.input(0)
    axes = _reduce_axes(ctx, x)
    if axes == []:
        return [ctx.op("Identity", [x])]
    attrs = {"keepdims": int(ctx.attr_bool("keepdims", False))}
    if axes is not None:
        attrs["axes"] = axes
    return [ctx.op("ReduceMax", [x], attrs)]


@converter("_copy", "identity", "BlockGrad", "stop_gradient", "make_loss", "MakeLoss", onnx="(none)",
           notes="identity at inference")
def convert_identity(node, ctx):
    return [ctx.input(0)]

