"""Converters for Caffe's element-wise and normalising layers (no windows, mostly no weights)."""

from __future__ import annotations

__all__ = [
    "convert_relu",
    "convert_sigmoid",
    "convert_tanh",
    "convert_elu",
    "convert_absval",
    "convert_bnll",
    "convert_power",
    "convert_exp",
    "convert_log",
    "convert_clip",
    "convert_threshold",
    "convert_eltwise",
    "convert_softmax",
    "convert_argmax",
    "convert_mvn",
    "convert_reduction",
]

import math
from typing import TYPE_CHECKING

import numpy as np

from graphfix.convert.caffe._table import converter

if TYPE_CHECKING:
    from graphfix.convert.caffe._driver import Context


def _unary(ctx: Context, op_type: str, **attrs):
    return [(ctx.op(op_type, [ctx.input()], **attrs), ctx.shape())]


@converter("ReLU")
def convert_relu(ctx: Context):
    """Relu, or LeakyRelu when negative_slope != 0."""
    slope = float(ctx.param("relu_param").negative_slope)
    return _unary(ctx, "LeakyRelu", alpha=slope) if slope else _unary(ctx, "Relu")


@converter("Sigmoid")
def convert_sigmoid(ctx: Context):
    """Sigmoid."""
    return _unary(ctx, "Sigmoid")


@converter("TanH")
def convert_tanh(ctx: Context):
    """Tanh."""
    return _unary(ctx, "Tanh")


@converter("ELU")
def convert_elu(ctx: Context):
    """Elu(alpha)."""
    return _unary(ctx, "Elu", alpha=float(ctx.param("elu_param").alpha))


@converter("AbsVal")
def convert_absval(ctx: Context):
    """Abs."""
    return _unary(ctx, "Abs")


@converter("BNLL")
def convert_bnll(ctx: Context):
    """Softplus (log(1 + exp(x)))."""
    return _unary(ctx, "Softplus")


def _affine(ctx: Context, x, scale: float, shift: float):
    """scale * x + shift, skipping the identity parts."""
    if scale != 1.0:
        x = ctx.op("Mul", [x, ctx.const(np.float32(scale), "scale")])
    if shift != 0.0:
        x = ctx.op("Add", [x, ctx.const(np.float32(shift), "shift")])
    return x


@converter("Power")
def convert_power(ctx: Context):
    """(shift + scale * x) ^ power as Mul/Add/Pow (identity parts skipped)."""
    p = ctx.param("power_param")
    y = _affine(ctx, ctx.input(), float(p.scale), float(p.shift))
    if p.power != 1.0:
        y = ctx.op("Pow", [y, ctx.const(np.float32(p.power), "power")])
    if y is ctx.input():
        y = ctx.op("Identity", [y])
    return [(y, ctx.shape())]


@converter("Exp")
def convert_exp(ctx: Context):
    """base ^ (shift + scale * x) as Exp (base -1 means e)."""
    p = ctx.param("exp_param")
    ln_base = 1.0 if p.base == -1.0 else math.log(p.base)
    if p.base != -1.0 and p.base <= 0:
        raise ctx.unsupported(f"base {p.base} (must be positive or -1)")
    y = _affine(ctx, ctx.input(), float(p.scale) * ln_base, float(p.shift) * ln_base)
    return [(ctx.op("Exp", [y]), ctx.shape())]


@converter("Log")
def convert_log(ctx: Context):
    """log_base(shift + scale * x) as Log (base -1 means e)."""
    p = ctx.param("log_param")
    if p.base != -1.0 and (p.base <= 0 or p.base == 1):
        raise ctx.unsupported(f"base {p.base} (must be positive, not 1, or -1)")
    y = ctx.op("Log", [_affine(ctx, ctx.input(), float(p.scale), float(p.shift))])
    if p.base != -1.0:
        y = ctx.op("Mul", [y, ctx.const(np.float32(1.0 / math.log(p.base)), "inv_ln_base")])
    return [(y, ctx.shape())]


@converter("Clip")
def convert_clip(ctx: Context):
    """Clip(min, max)."""
    p = ctx.param("clip_param")
    lo = ctx.const(np.float32(p.min), "min") if p.min is not None else None
    hi = ctx.const(np.float32(p.max), "max") if p.max is not None else None
    return [(ctx.op("Clip", [ctx.input(), lo, hi]), ctx.shape())]


@converter("Threshold")
def convert_threshold(ctx: Context):
    """Cast(x > threshold) to float."""
    t = ctx.const(np.float32(ctx.param("threshold_param").threshold), "threshold")
    y = ctx.op("Cast", [ctx.op("Greater", [ctx.input(), t])], to=1)
    return [(y, ctx.shape())]


@converter("Eltwise")
def convert_eltwise(ctx: Context):
    """Sum (with per-bottom coeff), Mul (PROD) or Max over all bottoms."""
    p = ctx.param("eltwise_param")
    xs = [ctx.input(i) for i in range(ctx.n_inputs)]
    shapes = {tuple(ctx.shape(i)) for i in range(ctx.n_inputs)}
    if len(shapes) != 1:
        raise ctx.unsupported(f"bottoms of different shapes {sorted(shapes)}")
    coeff = [float(c) for c in p.coeff]
    if coeff and p.operation != 1:
        raise ctx.unsupported("coeff is only legal for SUM")
    if coeff and len(coeff) != len(xs):
        raise ctx.unsupported(f"{len(coeff)} coeffs for {len(xs)} bottoms")
    if p.operation == 1:
        if coeff:
            xs = [
                x if c == 1.0 else ctx.op("Mul", [x, ctx.const(np.float32(c), f"coeff{i}")])
                for i, (x, c) in enumerate(zip(xs, coeff))
            ]
        op = "Sum"
    elif p.operation == 0:
        op = "Mul"
    elif p.operation == 2:
        op = "Max"
    else:
        raise ctx.unsupported(f"operation {p.operation}")
    if op == "Mul":
        y = xs[0]
        for x in xs[1:]:
            y = ctx.op("Mul", [y, x])
        if len(xs) == 1:
            y = ctx.op("Identity", [y])
    elif op == "Sum" and len(xs) == 2:
        y = ctx.op("Add", xs)
    else:
        y = ctx.op(op, xs)
    return [(y, ctx.shape())]


@converter("Softmax")
def convert_softmax(ctx: Context):
    """Softmax over the one axis (opset >= 13 semantics; transposed around for older opsets)."""
    shape = ctx.shape()
    axis = ctx.param("softmax_param").axis
    axis = axis + len(shape) if axis < 0 else axis
    if axis == 0:
        raise ctx.unsupported("softmax over the batch axis")
    if ctx.opset >= 13 or axis == len(shape) - 1:
        return [(ctx.op("Softmax", [ctx.input()], axis=axis), shape)]
    perm = [i for i in range(len(shape)) if i != axis] + [axis]
    inv = [perm.index(i) for i in range(len(shape))]
    t = ctx.op("Transpose", [ctx.input()], perm=perm)
    s = ctx.op("Softmax", [t], axis=len(shape) - 1)
    return [(ctx.op("Transpose", [s], perm=inv), shape)]


@converter("ArgMax")
def convert_argmax(ctx: Context):
    """TopK indices as float (and values with out_max_val), over `axis` or all non-batch dims."""
    p = ctx.param("argmax_param")
    shape = ctx.shape()
    k = int(p.top_k)
    x = ctx.input()
    if p.axis is None:
        flat = int(np.prod(shape[1:], dtype=np.int64))
        if k > flat:
            raise ctx.unsupported(f"top_k {k} > {flat}")
        if len(shape) != 2:
            x = ctx.op("Flatten", [x], axis=1)
        values, indices = ctx.op_multi("TopK", [x, ctx.ints([k], "k")], 2, axis=1)
        idx = ctx.op_axes("Unsqueeze", ctx.op("Cast", [indices], to=1), [1])
        if not p.out_max_val:
            return [(idx, (shape[0], 1, k))]
        vals = ctx.op_axes("Unsqueeze", values, [1])
        return [(ctx.op("Concat", [idx, vals], axis=1), (shape[0], 2, k))]
    axis = p.axis + len(shape) if p.axis < 0 else p.axis
    if axis == 0 or axis >= len(shape) or k > shape[axis]:
        raise ctx.unsupported(f"axis {p.axis} top_k {k} on {shape}")
    values, indices = ctx.op_multi("TopK", [x, ctx.ints([k], "k")], 2, axis=axis)
    out_shape = tuple(k if i == axis else d for i, d in enumerate(shape))
    if p.out_max_val:
        return [(ctx.op("Identity", [values]), out_shape)]
    return [(ctx.op("Cast", [indices], to=1), out_shape)]


@converter("MVN")
def convert_mvn(ctx: Context):
    """(x - mean) [/ (sqrt(var) + eps)] over H,W (or C,H,W when across_channels).

    Limits: 4-D input.
    """
    p = ctx.param("mvn_param")
    shape = ctx.shape()
    if len(shape) != 4:
        raise ctx.unsupported("needs a 4-D input")
    axes = [1, 2, 3] if p.across_channels else [2, 3]
    x = ctx.input()
    centred = ctx.op("Sub", [x, ctx.op_axes("ReduceMean", x, axes, keepdims=1)])
    if not p.normalize_variance:
        return [(centred, shape)]
    var = ctx.op_axes("ReduceMean", ctx.op("Mul", [centred, centred]), axes, keepdims=1)
    std = ctx.op("Add", [ctx.op("Sqrt", [var]), ctx.const(np.float32(p.eps), "eps")])
    return [(ctx.op("Div", [centred, std]), shape)]


_REDUCE = {1: "ReduceSum", 2: "ReduceL1", 3: "ReduceSumSquare", 4: "ReduceMean"}


@converter("Reduction")
def convert_reduction(ctx: Context):
    """ReduceSum / ReduceL1 (ASUM) / ReduceSumSquare / ReduceMean over every axis from `axis`, times coeff.

    Limits: axis >= 1.
    """
    p = ctx.param("reduction_param")
    shape = ctx.shape()
    axis = p.axis + len(shape) if p.axis < 0 else p.axis
    if not 1 <= axis < len(shape) or p.operation not in _REDUCE:
        raise ctx.unsupported(
            f"operation {p.operation} axis {p.axis} on a {len(shape)}-D blob (the batch axis is dynamic)"
        )
    axes = list(range(axis, len(shape)))
    y = ctx.op_axes(_REDUCE[p.operation], ctx.input(), axes, keepdims=0)
    if p.coeff != 1.0:
        y = ctx.op("Mul", [y, ctx.const(np.float32(p.coeff), "coeff")])
    return [(y, tuple(shape[:axis]))]
