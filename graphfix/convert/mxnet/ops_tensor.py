"""Converters for MXNet's shape and layout ops: Flatten, Concat, Reshape, slicing, casting.

Reshape keeps the batch dynamic: MXNet's special codes (0, -1, -2, -3, -4, reverse) are resolved
against the input shape with the batch as a symbol, and the result is written with ONNX's own
0 (copy) / -1 (infer) codes, never a literal batch size.
"""

from __future__ import annotations

__all__: list[str] = ["mxnet_reshape"]

from typing import Sequence

import numpy as np

from graphfix.convert.mxnet._table import converter

_INT64_MAX = np.iinfo(np.int64).max


@converter("Flatten", "flatten", onnx="Flatten (axis=1)")
def convert_flatten(node, ctx):
    return [ctx.op("Flatten", [ctx.input(0)], {"axis": 1})]


@converter("Concat", "concat", onnx="Concat", notes="dim (default 1)")
def convert_concat(node, ctx):
    inputs = [ctx.input(i) for i in range(ctx.num_inputs)]
    return [ctx.op("Concat", inputs, {"axis": ctx.attr_int("dim", 1)})]


class _Dim:
    """A dim as coef * batch**power (power 0 or 1), so the batch can stay symbolic."""

    __slots__ = ("coef", "power")

    def __init__(self, coef: int, power: int = 0) -> None:
        self.coef, self.power = coef, power

    def __mul__(self, other: _Dim) -> _Dim:
        return _Dim(self.coef * other.coef, self.power + other.power)

    def div(self, other: _Dim) -> _Dim | None:
        if other.coef == 0 or self.coef % other.coef or self.power < other.power:
            return None
        return _Dim(self.coef // other.coef, self.power - other.power)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Dim) and (self.coef, self.power) == (other.coef, other.power)

    def __repr__(self) -> str:
        return f"{self.coef}" + ("*N" if self.power else "")


def mxnet_reshape(dshape: Sequence[_Dim], spec: Sequence[int], reverse: bool = False) -> list[_Dim]:
    """MXNet's Reshape shape rule (special codes 0, -1, -2, -3, -4) over symbolic dims.

    With `reverse`, MXNet reverses the input shape and the spec, applies the rule and reverses
    the result (a -4 triple is reversed too, exactly as MXNet does).

    Raises:
        ValueError: the spec does not fit the input shape.
    """
    if reverse:
        return list(reversed(mxnet_reshape(list(reversed(dshape)), list(reversed(spec)))))
    out: list[_Dim] = []
    src = 0
    inf = -1
    i = 0
    ndim = len(dshape)
    while i < len(spec):
        code = spec[i]
        if code == 0:
            if src >= ndim:
                raise ValueError("code 0 past the input rank")
            out.append(dshape[src])
            src += 1
        elif code == -1:
            if inf >= 0:
                raise ValueError("more than one -1")
            inf = len(out)
            out.append(_Dim(1))
            src += 1
        elif code == -2:
            out.extend(dshape[src:])
            src = ndim
        elif code == -3:
            if src + 1 >= ndim:
                raise ValueError("code -3 past the input rank")
            out.append(dshape[src] * dshape[src + 1])
            src += 2
        elif code == -4:
            if i + 2 >= len(spec) or src >= ndim:
                raise ValueError("code -4 needs two dims after it")
            d0, d1 = spec[i + 1], spec[i + 2]
            whole = dshape[src]
            if d0 == -1 and d1 == -1:
                raise ValueError("code -4 with two -1")
            a = whole.div(_Dim(d1)) if d0 == -1 else _Dim(d0)
            b = whole.div(_Dim(d0)) if d1 == -1 else _Dim(d1)
            if a is None or b is None or not (a * b == whole):
                raise ValueError("code -4 split does not divide the dim")
            out.extend([a, b])
            src += 1
            i += 2
        elif code > 0:
            out.append(_Dim(code))
            src += 1
        else:
            raise ValueError(f"unknown code {code}")
        i += 1
    if inf >= 0:
        total = _Dim(1)
        for d in dshape:
            total = total * d
        known = _Dim(1)
        for k, d in enumerate(out):
            if k != inf:
                known = known * d
        value = total.div(known)
        if value is None:
            raise ValueError("-1 cannot be inferred")
        out[inf] = value
    return out


@converter("Reshape", "reshape", onnx="Reshape (0/-1 codes: batch stays dynamic)",
           notes="shape with codes 0, -1, -2, -3, -4, reverse; needs the input shape")
def convert_reshape(node, ctx):
    x = ctx.input(0)
    spec = ctx.attr_tuple("shape")
    if not spec:
        raise ctx.fail("has no shape attribute (target_shape is not supported)", kind="unsupported_op")
    shape = ctx.need_shape(x, "Reshape")
    batch_dims = [i for i, d in enumerate(shape) if not isinstance(d, int)]
    if len(batch_dims) > 1 or (batch_dims and batch_dims != [0]):
        raise ctx.fail(f"input shape {shape} has unknown dims besides the batch", kind="usage")
    dshape = [_Dim(1, 1) if not isinstance(d, int) else _Dim(d) for d in shape]
    try:
        out = mxnet_reshape(dshape, spec, reverse=ctx.attr_bool("reverse", False))
    except ValueError as exc:
        raise ctx.fail(f"shape {tuple(spec)} does not fit input {shape}: {exc}") from None
    codes: list[int] = []
    for k, d in enumerate(out):
        if d.power == 0:
            codes.append(d.coef)
        elif k == 0 and d.coef == 1 and batch_dims == [0]:
            codes.append(0)
        else:
            codes.append(-1)
    if codes.count(-1) > 1:
        raise ctx.fail(f"result {out} mixes the batch into several dims", kind="unsupported_op")
    return [ctx.op("Reshape", [x, ctx.ints(codes, "shape")])]


@converter("transpose", onnx="Transpose", notes="axes (empty: reverse)")
def convert_transpose(node, ctx):
    axes = ctx.attr_tuple("axes")
    attrs = {"perm": list(axes)} if axes else {}
    return [ctx.op("Transpose", [ctx.input(0)], attrs)]


@converter("SwapAxis", "swapaxes", onnx="Transpose", notes="dim1, dim2; needs the input rank")
def convert_swapaxes(node, ctx):
    x = ctx.input(0)
    rank = ctx.need_rank(x, "SwapAxis")
    perm = list(range(rank))
    a, b = ctx.attr_int("dim1", 0) % rank, ctx.attr_int("dim2", 0) % rank
    perm[a], perm[b] = perm[b], perm[a]
    return [ctx.op("Transpose", [x], {"perm": perm})]


@converter("expand_dims", onnx="Unsqueeze", notes="axis")
def convert_expand_dims(node, ctx):
    return [ctx.op("Unsqueeze", [ctx.input(0), ctx.ints([ctx.attr_int("axis")], "axes")])]


@converter("squeeze", onnx="Squeeze", notes="axis (none: every size-1 dim)")
def convert_squeeze(node, ctx):
    axes = ctx.attr_tuple("axis")
    inputs = [ctx.input(0)] + ([ctx.ints(axes, "axes")] if axes else [])
    return [ctx.op("Squeeze", inputs)]


@converter("slice_axis", onnx="Slice", notes="axis, begin, end (None: to the end)")
def convert_slice_axis(node, ctx):
    begin = ctx.attr_int("begin", 0)
    end = ctx.attr_int("end")
    end = _INT64_MAX if end is None else end
    inputs = [ctx.input(0), ctx.ints([begin], "starts"), ctx.ints([end], "ends"), ctx.ints([ctx.attr_int("axis")], "axes")]
    return [ctx.op("Slice", inputs)]


@converter("slice", "crop", onnx="Slice", notes="begin, end, step (None entries: whole dim)")
def convert_slice(node, ctx):
    begin = ctx.attr_tuple("begin") or ()
    end = ctx.attr_tuple("end") or ()
    step = ctx.attr_tuple("step") or ()
    starts, ends, axes, steps = [], [], [], []
    for a in range(len(begin)):
        s = step[a] if a < len(step) and step[a] is not None else 1
        b = begin[a] if begin[a] is not None else (0 if s > 0 else -1)
        e = end[a] if a < len(end) and end[a] is not None else (_INT64_MAX if s > 0 else -_INT64_MAX)
        starts.append(b), ends.append(e), axes.append(a), steps.append(s)
    inputs = [ctx.input(0), ctx.ints(starts, "starts"), ctx.ints(ends, "ends"), ctx.ints(axes, "axes"), ctx.ints(steps, "steps")]
    return [ctx.op("Slice", inputs)]


@converter("SliceChannel", "split", onnx="Split (+ Squeeze)", notes="num_outputs, axis, squeeze_axis; equal parts")
def convert_slice_channel(node, ctx):
    n = ctx.attr_int("num_outputs")
    axis = ctx.attr_int("axis", 1)
    x = ctx.input(0)
    parts = ctx.op("Split", [x], {"axis": axis}, num_outputs=n) if n > 1 else [ctx.op("Identity", [x], suffix="part")]
    if not ctx.attr_bool("squeeze_axis", False):
        return list(parts)
    axes = ctx.ints([axis], "axes")
    return [ctx.op("Squeeze", [p, axes], suffix=f"squeeze{k}") for k, p in enumerate(parts)]


_CAST = {
    "float32": 1,
    "float16": 10,
    "float64": 11,
    "uint8": 2,
    "int8": 3,
    "int32": 6,
    "int64": 7,
    "bool": 9,
}


@converter("Cast", "cast", onnx="Cast", values={"dtype": tuple(_CAST)})
def convert_cast(node, ctx):
    dtype = ctx.attr_str("dtype", "float32")
    return [ctx.op("Cast", [ctx.input(0)], {"to": _CAST[dtype]})]
