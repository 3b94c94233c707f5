"""Converters for Caffe's layers with weights or windows: conv, pooling, fully connected, norms."""

from __future__ import annotations

__all__ = [
    "convert_convolution",
    "convert_deconvolution",
    "convert_pooling",
    "convert_inner_product",
    "convert_lrn",
    "convert_batch_norm",
    "convert_scale",
    "convert_bias",
    "convert_prelu",
    "convert_normalize",
]

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from graphfix.convert.caffe._schema import Msg
from graphfix.convert.caffe._table import converter

if TYPE_CHECKING:
    from graphfix.convert.caffe._driver import Context

logger = logging.getLogger(__name__)


def _pair(p: Msg, many: str, h: str | None, w: str | None, default: int) -> tuple[int, int]:
    """A 2-D value from the repeated form (0, 1 or 2 values) or the `_h`/`_w` form."""
    values = list(getattr(p, many))
    if h is not None and (h in p or w in p):
        return int(getattr(p, h)), int(getattr(p, w))
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise ValueError(f"{many} has {len(values)} values; only 2-D is supported")


def _conv_geometry(ctx: Context) -> tuple[Msg, tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    p = ctx.param("convolution_param")
    if len(ctx.shape()) != 4:
        raise ctx.unsupported(f"only 2-D convolution on 4-D blobs (input is {len(ctx.shape())}-D)")
    if p.axis != 1:
        raise ctx.unsupported(f"axis {p.axis} (only 1)")
    try:
        k = _pair(p, "kernel_size", "kernel_h", "kernel_w", 0)
        s = _pair(p, "stride", "stride_h", "stride_w", 1)
        pad = _pair(p, "pad", "pad_h", "pad_w", 0)
        d = _pair(p, "dilation", None, None, 1)
    except ValueError as exc:
        raise ctx.unsupported(str(exc)) from None
    if min(k) <= 0 or min(s) <= 0:
        raise ctx.unsupported(f"kernel {k} / stride {s} must be positive")
    return p, k, s, pad, d


def _conv_node(ctx: Context, op: str) -> tuple[Any, tuple[int, int, int, int], tuple]:
    """Emit Conv or ConvTranspose from a convolution_param; returns (output, NCHW input, geometry).

    Caffe's Convolution weight is (Cout, Cin/group, kh, kw), Deconvolution's (Cin, Cout/group,
    kh, kw), as in ONNX Conv and ConvTranspose.
    """
    p, k, s, pad, d = _conv_geometry(ctx)
    n, c, h, w = ctx.shape()
    group = int(p.group)
    cout = int(p.num_output)
    if group <= 0 or c % group or cout % group:
        raise ctx.unsupported(f"group {group} does not divide channels {c} / num_output {cout}")
    blobs = ctx.blobs(2 if p.bias_term else 1)
    layout = (c, cout // group) if op == "ConvTranspose" else (cout, c // group)
    wt = ctx.weight(blobs[0], (*layout, k[0], k[1]), "weight")
    inputs = [ctx.input(), ctx.const(wt, "weight")]
    if p.bias_term:
        inputs.append(ctx.const(ctx.weight(blobs[1], (cout,), "bias"), "bias"))
    y = ctx.op(
        op, inputs, kernel_shape=list(k), strides=list(s), pads=[pad[0], pad[1], pad[0], pad[1]],
        dilations=list(d), group=group,
    )  # fmt: skip
    return y, (n, cout, h, w), (k, s, pad, d)


@converter("Convolution", weights=True)
def convert_convolution(ctx: Context):
    """Conv (group, dilation, all pad/kernel/stride forms).

    Limits: 2-D only.
    """
    y, (n, cout, h, w), (k, s, pad, d) = _conv_node(ctx, "Conv")
    oh = (h + 2 * pad[0] - (d[0] * (k[0] - 1) + 1)) // s[0] + 1
    ow = (w + 2 * pad[1] - (d[1] * (k[1] - 1) + 1)) // s[1] + 1
    return [(y, (n, cout, oh, ow))]


@converter("Deconvolution", weights=True)
def convert_deconvolution(ctx: Context):
    """ConvTranspose (weight layout Cin x Cout/group x kh x kw, as in ONNX).

    Limits: 2-D only.
    """
    y, (n, cout, h, w), (k, s, pad, d) = _conv_node(ctx, "ConvTranspose")
    oh = s[0] * (h - 1) + d[0] * (k[0] - 1) + 1 - 2 * pad[0]
    ow = s[1] * (w - 1) + d[1] * (k[1] - 1) + 1 - 2 * pad[1]
    return [(y, (n, cout, oh, ow))]


def caffe_pool_size(size: int, k: int, s: int, p: int, ceil: bool = True) -> int:
    """Caffe's pooling output size (ceil by default; the last window starts inside image+pad)."""
    if ceil:
        out = int(math.ceil((size + 2 * p - k) / s)) + 1
        if p > 0 and (out - 1) * s >= size + p:
            out -= 1
    else:
        out = (size + 2 * p - k) // s + 1
    return out


@converter("Pooling")
def convert_pooling(ctx: Context):
    """MaxPool / AveragePool with Caffe's ceil output size and AVE divisor; Global*Pool for global_pooling.

    Limits: MAX and AVE (not STOCHASTIC); 4-D input.
    """
    p = ctx.param("pooling_param")
    shape = ctx.shape()
    if len(shape) != 4:
        raise ctx.unsupported(f"pooling needs a 4-D input, got {len(shape)}-D")
    n, c, h, w = shape
    if p.pool not in (0, 1):
        raise ctx.unsupported("STOCHASTIC pooling (only MAX and AVE)")
    is_max = p.pool == 0
    if p.global_pooling:
        y = ctx.op("GlobalMaxPool" if is_max else "GlobalAveragePool", [ctx.input()])
        return [(y, (n, c, 1, 1))]
    if "kernel_size" in p:
        k = (int(p.kernel_size), int(p.kernel_size))
    else:
        k = (int(p.kernel_h), int(p.kernel_w))
    pad = (int(p.pad_h), int(p.pad_w)) if ("pad_h" in p or "pad_w" in p) else (int(p.pad), int(p.pad))
    if "stride_h" in p or "stride_w" in p:
        s = (int(p.stride_h), int(p.stride_w))
    else:
        s = (int(p.stride), int(p.stride))
    if min(k) <= 0 or min(s) <= 0:
        raise ctx.unsupported(f"kernel {k} / stride {s} must be positive")
    ceil = p.round_mode == 0
    out = tuple(caffe_pool_size(size, kk, ss, pp, ceil) for size, kk, ss, pp in zip((h, w), k, s, pad))
    # end padding that makes ONNX's floor-mode size equal Caffe's size
    if is_max:
        end = [(o - 1) * ss + kk - size - pp for o, ss, kk, size, pp in zip(out, s, k, (h, w), pad)]
        end = [max(0, e) for e in end]
        got = tuple((size + pp + e - kk) // ss + 1 for size, pp, e, kk, ss in zip((h, w), pad, end, k, s))
        if got != out:
            raise ctx.unsupported(f"pooling geometry kernel {k} stride {s} pad {pad} on {h}x{w}")
        y = ctx.op(
            "MaxPool", [ctx.input()], kernel_shape=list(k), strides=list(s), pads=[pad[0], pad[1], end[0], end[1]]
        )
        return [(y, (n, c, *out))]
    # AVE: the divisor counts Caffe's padding but not the ceil overhang past image + pad
    extra = [max(0, (o - 1) * ss + kk - (size + 2 * pp)) for o, ss, kk, size, pp in zip(out, s, k, (h, w), pad)]
    x = ctx.input()
    if max(extra) == 0:
        attrs = dict(pads=[pad[0], pad[1], pad[0], pad[1]], count_include_pad=1)
    elif max(pad) == 0:
        attrs = dict(pads=[0, 0, extra[0], extra[1]], count_include_pad=0)
    else:
        x = ctx.op("Pad", [x, ctx.ints([0, 0, pad[0], pad[1], 0, 0, pad[0], pad[1]], "pads")], mode="constant")
        attrs = dict(pads=[0, 0, extra[0], extra[1]], count_include_pad=0)
    y = ctx.op("AveragePool", [x], kernel_shape=list(k), strides=list(s), **attrs)
    got = tuple((size + 2 * pp + e - kk) // ss + 1 for size, pp, e, kk, ss in zip((h, w), pad, extra, k, s))
    if got != out:
        raise ctx.unsupported(f"pooling geometry kernel {k} stride {s} pad {pad} on {h}x{w}")
    return [(y, (n, c, *out))]


@converter("InnerProduct", weights=True)
def convert_inner_product(ctx: Context):
    """Gemm (axis 1) or Reshape + MatMul + Add (other axes); transpose; batch kept dynamic.

    Limits: axis >= 1 (the batch is never folded).
    """
    p = ctx.param("inner_product_param")
    shape = ctx.shape()
    axis = p.axis + len(shape) if p.axis < 0 else p.axis
    if axis < 1 or axis >= len(shape) + (1 if len(shape) == 1 else 0):
        raise ctx.unsupported(f"axis {p.axis} on a {len(shape)}-D input (the batch axis cannot be folded)")
    nout = int(p.num_output)
    kdim = int(np.prod(shape[axis:], dtype=np.int64))
    blobs = ctx.blobs(2 if p.bias_term else 1)
    wt = ctx.weight(blobs[0], (kdim, nout) if p.transpose else (nout, kdim), "weight")
    bias = ctx.const(ctx.weight(blobs[1], (nout,), "bias"), "bias") if p.bias_term else None
    x = ctx.input()
    if axis == 1:
        if len(shape) != 2:
            x = ctx.op("Flatten", [x], axis=1)
        y = ctx.op("Gemm", [x, ctx.const(wt, "weight"), bias], transB=0 if p.transpose else 1)
        return [(y, (shape[0], nout))]
    if len(shape) != axis + 1:
        x = ctx.op("Reshape", [x, ctx.ints([0] * axis + [kdim], "shape")])
    w_kn = wt if p.transpose else wt.T
    y = ctx.op("MatMul", [x, ctx.const(np.ascontiguousarray(w_kn), "weight")])
    if bias is not None:
        y = ctx.op("Add", [y, bias])
    return [(y, (*shape[:axis], nout))]


@converter("LRN")
def convert_lrn(ctx: Context):
    """LRN (ACROSS_CHANNELS); WITHIN_CHANNEL as x * (1 + alpha * avgpool(x^2))^-beta.

    Limits: 4-D input.
    """
    p = ctx.param("lrn_param")
    size = int(p.local_size)
    if size % 2 == 0:
        raise ctx.unsupported(f"local_size {size} (Caffe requires an odd size)")
    x = ctx.input()
    if p.norm_region == 0:
        y = ctx.op("LRN", [x], size=size, alpha=float(p.alpha), beta=float(p.beta), bias=float(p.k))
        return [(y, ctx.shape())]
    if len(ctx.shape()) != 4:
        raise ctx.unsupported("WITHIN_CHANNEL needs a 4-D input")
    half = (size - 1) // 2
    sq = ctx.op("Mul", [x, x])
    pooled = ctx.op(
        "AveragePool", [sq], kernel_shape=[size, size], strides=[1, 1], pads=[half] * 4, count_include_pad=1
    )
    scaled = ctx.op("Mul", [pooled, ctx.const(np.float32(p.alpha), "alpha")])
    shifted = ctx.op("Add", [scaled, ctx.const(np.float32(1.0), "one")])
    powered = ctx.op("Pow", [shifted, ctx.const(np.float32(-p.beta), "neg_beta")])
    return [(ctx.op("Mul", [x, powered]), ctx.shape())]


@converter("BatchNorm", weights=True)
def convert_batch_norm(ctx: Context):
    """BatchNormalization with Caffe's moving-average factor (blob #3) divided out; no affine part.

    Limits: global statistics (deploy nets).
    """
    p = ctx.param("batch_norm_param")
    if p.use_global_stats is False:
        logger.warning(
            "BatchNorm %s sets use_global_stats: false; converting with the stored statistics", ctx.layer.name
        )
    shape = ctx.shape()
    if len(shape) < 2:
        raise ctx.unsupported("needs an input with a channel axis")
    c = shape[1]
    blobs = ctx.blobs(2, 3)
    mean = ctx.weight(blobs[0], (c,), "mean")
    var = ctx.weight(blobs[1], (c,), "variance")
    factor = float(blobs[2].reshape(-1)[0]) if len(blobs) > 2 and blobs[2].size else 1.0
    scale = np.float32(0.0 if factor == 0 else 1.0 / factor)
    mean = (mean * scale).astype(np.float32)
    var = (var * scale).astype(np.float32)
    ones = np.ones(c, np.float32)
    zeros = np.zeros(c, np.float32)
    y = ctx.op(
        "BatchNormalization",
        [
            ctx.input(),
            ctx.const(ones, "gamma"),
            ctx.const(zeros, "beta"),
            ctx.const(mean, "mean"),
            ctx.const(var, "var"),
        ],
        epsilon=float(p.eps),
    )
    return [(y, shape)]


def _param_shape(
    ctx: Context, shape: tuple[int, ...], axis: int, num_axes: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(parameter shape, broadcastable shape) for Scale/Bias over shape[axis:axis+num_axes]."""
    axis = axis + len(shape) if axis < 0 else axis
    end = len(shape) if num_axes == -1 else axis + num_axes
    if axis < 1 or end > len(shape) or end < axis:
        raise ctx.unsupported(f"axis {axis} num_axes {num_axes} on a {len(shape)}-D input (the batch axis is dynamic)")
    pshape = tuple(shape[axis:end])
    return pshape, pshape + (1,) * (len(shape) - end)


def _broadcast_second(ctx: Context, axis: int) -> object:
    """The second bottom with trailing unit axes so it broadcasts against the first from `axis`."""
    shape, other = ctx.shape(0), ctx.shape(1)
    axis = axis + len(shape) if axis < 0 else axis
    if tuple(shape[axis : axis + len(other)]) != tuple(other):
        raise ctx.unsupported(f"second bottom {other} does not match {shape} at axis {axis}")
    y = ctx.input(1)
    trailing = len(shape) - axis - len(other)
    if trailing:
        y = ctx.op_axes("Unsqueeze", y, range(len(other), len(other) + trailing))
    return y


@converter("Scale", weights=True)
def convert_scale(ctx: Context):
    """Mul (+ Add for bias_term); gamma over shape[axis:axis+num_axes], or the second bottom as the multiplier."""
    p = ctx.param("scale_param")
    shape = ctx.shape()
    x = ctx.input()
    if ctx.n_inputs == 2:
        y = ctx.op("Mul", [x, _broadcast_second(ctx, p.axis)])
        if p.bias_term:
            pshape = tuple(ctx.shape(1))
            axis = p.axis + len(shape) if p.axis < 0 else p.axis
            bshape = pshape + (1,) * (len(shape) - axis - len(pshape))
            if axis == 0:
                raise ctx.unsupported("a bias over the batch axis")
            bias = ctx.weight(ctx.blobs(1)[0], bshape, "bias")
            y = ctx.op("Add", [y, ctx.const(bias, "bias")])
        return [(y, shape)]
    pshape, bshape = _param_shape(ctx, shape, p.axis, p.num_axes)
    blobs = ctx.blobs(2 if p.bias_term else 1)
    gamma = ctx.weight(blobs[0], bshape, "scale")
    y = ctx.op("Mul", [x, ctx.const(gamma, "scale")])
    if p.bias_term:
        y = ctx.op("Add", [y, ctx.const(ctx.weight(blobs[1], bshape, "bias"), "bias")])
    return [(y, shape)]


@converter("Bias", weights=True)
def convert_bias(ctx: Context):
    """Add; the bias over shape[axis:axis+num_axes] from the blob, or the second bottom."""
    p = ctx.param("bias_param")
    shape = ctx.shape()
    if ctx.n_inputs == 2:
        return [(ctx.op("Add", [ctx.input(), _broadcast_second(ctx, p.axis)]), shape)]
    _, bshape = _param_shape(ctx, shape, p.axis, p.num_axes)
    bias = ctx.weight(ctx.blobs(1)[0], bshape, "bias")
    return [(ctx.op("Add", [ctx.input(), ctx.const(bias, "bias")]), shape)]


@converter("PReLU", weights=True)
def convert_prelu(ctx: Context):
    """PRelu with the slope shaped (C,1,1) so it broadcasts over channels, not width."""
    p = ctx.param("prelu_param")
    shape = ctx.shape()
    slope = ctx.blobs(1)[0]
    if p.channel_shared or len(shape) < 2:
        slope = ctx.weight(slope, (1,), "slope")
    else:
        slope = ctx.weight(slope, (shape[1],) + (1,) * (len(shape) - 2), "slope")
    return [(ctx.op("PRelu", [ctx.input(), ctx.const(slope, "slope")]), shape)]


@converter("Normalize", weights=True)
def convert_normalize(ctx: Context):
    """SSD Normalize: x / sqrt(sum(x^2) + eps) * scale, over C (or C,H,W when across_spatial).

    Limits: 4-D input.
    """
    p = ctx.param("norm_param")
    shape = ctx.shape()
    if len(shape) != 4:
        raise ctx.unsupported("needs a 4-D input")
    x = ctx.input()
    axes = [1, 2, 3] if p.across_spatial else [1]
    sq = ctx.op("Mul", [x, x])
    summed = ctx.op_axes("ReduceSum", sq, axes, keepdims=1)
    norm = ctx.op("Sqrt", [ctx.op("Add", [summed, ctx.const(np.float32(p.eps), "eps")])])
    y = ctx.op("Div", [x, norm])
    scale = ctx.blobs(1)[0]
    scale = ctx.weight(scale, (1,) if p.channel_shared else (shape[1], 1, 1), "scale")
    return [(ctx.op("Mul", [y, ctx.const(scale, "scale")]), shape)]
