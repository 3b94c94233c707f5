"""Converters for MXNet's neural-network ops: convolution, normalisation, pooling, heads.

Each converter is `(node, ctx) -> list[ir.Value]` (see `_driver.Context`). MXNet semantics that
MXNet's own exporter gets wrong are honoured here: BatchNorm `fix_gamma` (default True: the scale
is ones), PReLU slopes on the channel axis, and `pooling_convention='full'` average pooling with
MXNet's border divisor.
"""

from __future__ import annotations

__all__: list[str] = []

import math

import numpy as np

from graphfix.convert.mxnet._table import converter


def _spatial(ctx, key: str, n: int, default: int) -> list[int]:
    values = ctx.attr_tuple(key) or ()
    values = list(values) if values else [default] * n
    if len(values) != n:
        raise ctx.fail(f"attribute {key}={values} does not match a {n}-d kernel")
    return values


#: Channel-first layouts (MXNet's NHWC family is refused by name).
_LAYOUTS = (None, "NCW", "NCHW", "NCDHW")


@converter("Convolution", "Convolution_v1", onnx="Conv", notes="group, dilation, no_bias",
           values={"layout": _LAYOUTS})
def convert_convolution(node, ctx):
    kernel = list(ctx.attr_tuple("kernel") or ())
    if not kernel:
        raise ctx.fail("has no kernel attribute")
    n = len(kernel)
    num_filter = ctx.attr_int("num_filter")
    group = ctx.attr_int("num_group", 1)
    x = ctx.input(0)
    shape = ctx.shape(x)
    cin = shape[1] if shape and len(shape) > 1 and isinstance(shape[1], int) else None
    w = ctx.weight(1, (num_filter, None if cin is None else cin // group, *kernel))
    inputs = [x, w]
    if not ctx.attr_bool("no_bias", False):
        inputs.append(ctx.weight(2, (num_filter,), what="bias"))
    pad = _spatial(ctx, "pad", n, 0)
    return [
        ctx.op(
            "Conv",
            inputs,
            {
                "kernel_shape": kernel,
                "strides": _spatial(ctx, "stride", n, 1),
                "dilations": _spatial(ctx, "dilate", n, 1),
                "pads": pad + pad,
                "group": group,
            },
        )
    ]


@converter("Deconvolution", onnx="ConvTranspose", notes="adj, group, dilation, no_bias; no target_shape",
           values={"layout": _LAYOUTS})
def convert_deconvolution(node, ctx):
    kernel = list(ctx.attr_tuple("kernel") or ())
    n = len(kernel)
    if ctx.attr_tuple("target_shape"):
        raise ctx.fail("target_shape is not supported", kind="unsupported_op", hint="use pad/adj instead")
    num_filter = ctx.attr_int("num_filter")
    group = ctx.attr_int("num_group", 1)
    w = ctx.weight(1, (None, num_filter // group, *kernel))
    inputs = [ctx.input(0), w]
    # MXNet's Deconvolution has no_bias=True by default.
    if not ctx.attr_bool("no_bias", True):
        inputs.append(ctx.weight(2, (num_filter,), what="bias"))
    pad = _spatial(ctx, "pad", n, 0)
    return [
        ctx.op(
            "ConvTranspose",
            inputs,
            {
                "kernel_shape": kernel,
                "strides": _spatial(ctx, "stride", n, 1),
                "dilations": _spatial(ctx, "dilate", n, 1),
                "pads": pad + pad,
                "output_padding": _spatial(ctx, "adj", n, 0),
                "group": group,
            },
        )
    ]


@converter("BatchNorm", "CuDNNBatchNorm", "BatchNorm_v1", onnx="BatchNormalization",
           notes="fix_gamma (default True: scale = ones), eps (default 1e-3), axis 1 only; inference statistics",
           values={"output_mean_var": (False,)})
def convert_batch_norm(node, ctx):
    axis = ctx.attr_int("axis", 1)
    x = ctx.input(0)
    if axis != 1:
        rank = ctx.rank(x)
        if rank is None or axis % rank != 1:
            raise ctx.fail(f"axis={axis} is not supported", kind="unsupported_op", hint="only the channel axis 1")
    beta = ctx.weight(2, (None,), what="beta")
    c = ctx.shape(beta)[0]
    if ctx.attr_bool("fix_gamma", True):
        # MXNet ignores the stored gamma here (some checkpoints keep random values in it).
        gamma = ctx.const(np.ones(c, np.float32), "gamma_fixed")
    else:
        gamma = ctx.weight(1, (c,), what="gamma")
    inputs = [
        x,
        gamma,
        ctx.weight(2, (c,), what="beta"),
        ctx.weight(3, (c,), what="moving_mean"),
        ctx.weight(4, (c,), what="moving_var"),
    ]
    return [ctx.op("BatchNormalization", inputs, {"epsilon": ctx.attr_float("eps", 1e-3)})]


def _activation(ctx, act: str, x):
    if act == "relu":
        return ctx.op("Relu", [x])
    if act == "sigmoid":
        return ctx.op("Sigmoid", [x])
    if act == "tanh":
        return ctx.op("Tanh", [x])
    if act == "softrelu":
        return ctx.op("Softplus", [x])
    if act == "softsign":
        return ctx.op("Softsign", [x])
    raise ctx.fail(f"act_type={act} is not supported", kind="unsupported_op")


@converter("Activation", onnx="Relu, Sigmoid, Tanh, Softplus, Softsign",
           values={"act_type": ("relu", "sigmoid", "tanh", "softrelu", "softsign")})
def convert_activation(node, ctx):
    return [_activation(ctx, ctx.attr_str("act_type", "relu"), ctx.input(0))]


@converter("LeakyReLU", onnx="LeakyRelu, PRelu, Elu, Selu, Erf (gelu)",
           notes="prelu slopes on the channel axis; rrelu at inference: slope (lower_bound + upper_bound) / 2",
           values={"act_type": ("leaky", "prelu", "elu", "selu", "gelu", "rrelu")})
def convert_leaky_relu(node, ctx):
    act = ctx.attr_str("act_type", "leaky")
    slope = ctx.attr_float("slope", 0.25)
    x = ctx.input(0)
    if act == "leaky":
        return [ctx.op("LeakyRelu", [x], {"alpha": slope})]
    if act == "rrelu":  # outputs (out, mask); the mask is zeros at inference
        lower = ctx.attr_float("lower_bound", 0.125)
        upper = ctx.attr_float("upper_bound", 0.334)
        mask = ctx.op("ConstantOfShape", [ctx.op("Shape", [x], suffix="shape")], suffix="mask")
        return [ctx.op("LeakyRelu", [x], {"alpha": (lower + upper) / 2}), mask]
    if act == "elu":
        return [ctx.op("Elu", [x], {"alpha": slope})]
    if act == "selu":
        return [ctx.op("Selu", [x], {"alpha": 1.6732632423543772, "gamma": 1.0507009873554805})]
    if act == "gelu":
        half = ctx.op("Mul", [x, ctx.const(1 / math.sqrt(2), "rsqrt2")], suffix="scaled")
        erf = ctx.op("Erf", [half], suffix="erf")
        one = ctx.op("Add", [erf, ctx.const(1.0, "one")], suffix="plus1")
        xh = ctx.op("Mul", [x, ctx.const(0.5, "half")], suffix="half")
        return [ctx.op("Mul", [xh, one])]
    if act == "prelu":
        gamma = ctx.weight(1, what="gamma")
        rank = ctx.need_rank(x, "broadcasting PReLU slopes on the channel axis")
        gshape = ctx.shape(gamma)
        if gshape is None or len(gshape) != 1:
            raise ctx.fail(f"PReLU gamma has shape {gshape}; expected (C,)")
        shape = ctx.shape(x)
        c = shape[1] if rank > 1 else None
        if isinstance(c, int) and gshape[0] not in (1, c):
            raise ctx.fail(f"PReLU gamma has {gshape[0]} slopes for {c} channels")
        if rank > 2:
            target = (-1,) + (1,) * (rank - 2)
            if gamma.const_value is not None:
                gamma = ctx.const(gamma.const_value.numpy().reshape(target), "slope")
            else:
                gamma = ctx.op("Reshape", [gamma, ctx.ints(target, "slope_shape")], suffix="slope")
        return [ctx.op("PRelu", [x, gamma])]
    raise ctx.fail(f"act_type={act} is not supported", kind="unsupported_op")


@converter("Pooling", "Pooling_v1",
           onnx="MaxPool, AveragePool, GlobalMaxPool, GlobalAveragePool, ReduceSum, Pad (lp: Mul, Sqrt)",
           notes="pooling_convention 'full' with MXNet's border divisor; count_include_pad; lp: p_value 1 "
           "(a sum) or 2 (the root of a sum of squares); sum and lp with 'full' need the input shape; "
           "Pooling_v1 pools the zero-padded input (max sees the zeros, avg divides by the kernel area)",
           values={"pool_type": ("max", "avg", "sum", "lp"), "pooling_convention": ("valid", "full"),
                   "layout": _LAYOUTS})
def convert_pooling(node, ctx):
    pool_type = ctx.attr_str("pool_type", "max")
    x = ctx.input(0)
    if pool_type == "lp":
        p = ctx.attr_int("p_value")
        if p == 1:  # MXNet's L1 pooling is the plain sum (no absolute value)
            return [_pool(ctx, x, "sum", None)]
        if p != 2:
            raise ctx.fail(f"p_value={p!r} is not supported", kind="unsupported_op", hint="supported: 1, 2")
        squares = ctx.op("Mul", [x, x], suffix="square")
        return [ctx.op("Sqrt", [_pool(ctx, squares, "sum", "sum")])]
    if node.op == "Pooling_v1" and not ctx.attr_bool("global_pool", False):
        return [_pool_v1(ctx, x, pool_type)]
    return [_pool(ctx, x, pool_type, None)]


def _pool_v1(ctx, x, pool_type: str):
    """Pooling_v1 pools the zero-padded input: max sees the padding zeros, avg divides by the
    kernel area everywhere (the sum is the same as Pooling's)."""
    kernel = list(ctx.attr_tuple("kernel") or ())
    if pool_type == "avg":
        total = _pool(ctx, x, "sum", "sum")
        return ctx.op("Mul", [total, ctx.const(1.0 / float(np.prod(kernel)), "inv_area")])
    pad = _spatial(ctx, "pad", len(kernel), 0)
    if pool_type == "max" and any(pad):
        # Windows that reach into the padding also see its zeros. (A zero Pad before MaxPool
        # would say the same, but onnxruntime fuses it into MaxPool's own -inf padding.)
        shape = ctx.need_shape(x, "Pooling_v1 max pooling with pad")
        stride = _spatial(ctx, "stride", len(kernel), 1)
        full = ctx.attr_str("pooling_convention", "valid") == "full"
        touches = np.zeros((), bool)
        for size, k, st, p in zip(shape[2:], kernel, stride, pad):
            starts = np.arange(_pool_out(size, k, st, p, full)) * st - p
            touches = np.logical_or.outer(touches, (starts < 0) | (starts + k > size))
        pooled = _pool(ctx, x, "max", "max")
        floor = ctx.op("Max", [pooled, ctx.const(0.0, "zero")], suffix="with_zeros")
        return ctx.op("Where", [ctx.const(touches, "touches_pad", dtype=bool), floor, pooled])
    return _pool(ctx, x, pool_type, None)


def _pool(ctx, x, pool_type: str, suffix: str | None):
    """MXNet pooling of `x` (max, avg or sum), named `<node>` or `<node>_<suffix>`."""
    if ctx.attr_bool("global_pool", False):
        if pool_type == "max":
            return ctx.op("GlobalMaxPool", [x], suffix=suffix)
        if pool_type == "avg":
            return ctx.op("GlobalAveragePool", [x], suffix=suffix)
        rank = ctx.need_rank(x, "global sum pooling")
        return ctx.op("ReduceSum", [x, ctx.ints(range(2, rank), "axes")], {"keepdims": 1}, suffix=suffix)
    kernel = list(ctx.attr_tuple("kernel") or ())
    if not kernel:
        raise ctx.fail("has no kernel attribute")
    n = len(kernel)
    stride = _spatial(ctx, "stride", n, 1)
    pad = _spatial(ctx, "pad", n, 0)
    full = ctx.attr_str("pooling_convention", "valid") == "full"
    include_pad = ctx.attr_bool("count_include_pad", True)
    shape = ctx.shape(x)
    if pool_type in ("max", "avg") and not any(pad) and shape is not None and list(shape[2:]) == kernel:
        # One window over the whole (static) map, e.g. SqueezeNet's AvgPool2D(13) on 13x13:
        # the same numbers as a global pool, which the head finder recognises.
        return ctx.op("GlobalMaxPool" if pool_type == "max" else "GlobalAveragePool", [x], suffix=suffix)
    base = {"kernel_shape": kernel, "strides": stride, "pads": pad + pad, "ceil_mode": int(full)}
    extra = _extra_full_windows(ctx, x, kernel, stride, pad) if full else [0] * n
    if pool_type == "max" or (pool_type == "avg" and not include_pad):
        if any(extra):
            raise ctx.fail("a 'full' pooling window lies wholly in the padding; MXNet gives -inf/NaN there",
                           kind="unsupported_op")
        if pool_type == "max":
            return ctx.op("MaxPool", [x], base, suffix=suffix)
        return ctx.op("AveragePool", [x], {**base, "count_include_pad": 0}, suffix=suffix)
    # ONNX count_include_pad=1 divides by the window clipped to [-pad, size + pad), as MXNet does
    # (a sum multiplies that back; count_include_pad does not change a sum).
    last = pool_type == "avg" and not any(extra)
    out = ctx.op("AveragePool", [x], {**base, "count_include_pad": 1}, suffix=suffix if last else "avg")
    if pool_type == "sum":
        if full:
            sizes = _window_sizes(ctx.need_shape(x, "'full' sum pooling"), kernel, stride, pad, extra)
            factor = ctx.const(sizes, "window_sizes")
        else:
            factor = ctx.const(float(np.prod(kernel)), "area")
        out = ctx.op("Mul", [out, factor], suffix=suffix if not any(extra) else "sum_avg")
    if any(extra):
        # MXNet's ceil rule keeps trailing windows that lie wholly in the right padding (value 0);
        # ONNX drops a window that starts in the padding.
        pads = ctx.ints([0] * (n + 2) + [0, 0] + list(extra), "extra_windows")
        out = ctx.op("Pad", [out, pads], {"mode": "constant"}, suffix=suffix)
    return out


def _extra_full_windows(ctx, x, kernel, stride, pad) -> list[int]:
    """Per spatial dim, how many more 'full' windows MXNet has than ONNX ceil_mode (0 or 1)."""
    shape = ctx.shape(x)
    out = []
    for i, (k, s, p) in enumerate(zip(kernel, stride, pad)):
        size = shape[2 + i] if shape is not None and len(shape) == len(kernel) + 2 else None
        if not isinstance(size, int):
            out.append(0)
            continue
        mx_out = _pool_out(size, k, s, p, True)
        start = (mx_out - 1) * s - p
        if start >= size + p:
            raise ctx.fail("a 'full' pooling window lies beyond the padded input; MXNet divides by zero there",
                           kind="unsupported_op")
        out.append(1 if start >= size else 0)
    return out


def _window_sizes(shape, kernel, stride, pad, extra) -> np.ndarray:
    """MXNet's per-window element counts (clipped to [-pad, size + pad)) of ONNX's output windows."""
    sizes = np.ones((), np.float32)
    for size, k, s, p, e in zip(shape[2:], kernel, stride, pad, extra):
        count = _pool_out(size, k, s, p, True) - e
        starts = np.arange(count) * s - p
        dim = (np.minimum(starts + k, size + p) - starts).astype(np.float32)
        sizes = np.multiply.outer(sizes, dim)
    return sizes


def _pool_out(size: int, k: int, s: int, p: int, full: bool) -> int:
    if full:
        return 1 + int(math.ceil((size + 2 * p - k) / s))
    return 1 + (size + 2 * p - k) // s


@converter("FullyConnected", onnx="Gemm (transB=1), Flatten, MatMul+Add",
           notes="flatten true/false, no_bias; one Flatten only where the input is not already 2-D")
def convert_fully_connected(node, ctx):
    num_hidden = ctx.attr_int("num_hidden")
    x = ctx.input(0)
    flatten = ctx.attr_bool("flatten", True)
    no_bias = ctx.attr_bool("no_bias", False)
    rank = ctx.rank(x)
    shape = ctx.shape(x)
    k = None
    if shape is not None and all(isinstance(d, int) for d in shape[1:]):
        k = int(np.prod(shape[1:])) if flatten else shape[-1]
    bias = None if no_bias else ctx.weight(2, (num_hidden,), what="bias")
    if flatten or rank == 2:
        w = ctx.weight(1, (num_hidden, k))
        if rank != 2:
            x = ctx.op("Flatten", [x], {"axis": 1}, suffix="flatten")
        return [ctx.op("Gemm", [x, w] + ([bias] if bias is not None else []), {"transB": 1})]
    w = ctx.weight(1, (num_hidden, k))
    if w.const_value is not None:
        wt = ctx.const(np.ascontiguousarray(w.const_value.numpy().T), "weight_t")
    else:
        wt = ctx.op("Transpose", [w], {"perm": [1, 0]}, suffix="weight_t")
    if bias is None:
        return [ctx.op("MatMul", [x, wt])]
    mm = ctx.op("MatMul", [x, wt], suffix="matmul")
    return [ctx.op("Add", [mm, bias])]


@converter("Dropout", onnx="(none)", notes="identity at inference (mode 'always' drops at inference too)",
           values={"mode": ("training",)})
def convert_dropout(node, ctx):
    return [ctx.input(0)]


def _softmax_last(ctx, x):
    """Softmax over the last axis (SoftmaxActivation instance mode: MXNet's FlatTo2D keeps the last
    dim); rank 2 gets axis=1, which the head finder expects."""
    return ctx.op("Softmax", [x], {"axis": 1 if ctx.rank(x) == 2 else -1})


def _softmax_flat(ctx, x):
    """Softmax over all non-batch dims (SoftmaxOutput without multi_output: MXNet reshapes the
    data to (N, -1)); a 2-D input (a classifier head) is a single Softmax(axis=1)."""
    if ctx.rank(x) == 2:
        return ctx.op("Softmax", [x], {"axis": 1})
    flat = ctx.op("Flatten", [x], {"axis": 1}, suffix="flatten")
    sm = ctx.op("Softmax", [flat], {"axis": 1}, suffix="softmax")
    return ctx.op("Reshape", [sm, ctx.op("Shape", [x], suffix="shape")])


@converter("SoftmaxOutput", "Softmax", onnx="Softmax (axis=1)",
           notes="inference output (probabilities): multi_output over axis 1, preserve_shape over the last axis, else over all non-batch dims (axis=1 for 2-D); the label input is dropped")
def convert_softmax_output(node, ctx):
    x = ctx.input(0)
    if ctx.attr_bool("multi_output", False):
        return [ctx.op("Softmax", [x], {"axis": 1})]
    if ctx.attr_bool("preserve_shape", False):
        return [_softmax_last(ctx, x)]
    return [_softmax_flat(ctx, x)]


@converter("SoftmaxActivation", onnx="Softmax", notes="mode instance (last axis, as MXNet computes it) and channel (axis 1)",
           values={"mode": ("instance", "channel")})
def convert_softmax_activation(node, ctx):
    x = ctx.input(0)
    if ctx.attr_str("mode", "instance") == "channel":
        return [ctx.op("Softmax", [x], {"axis": 1})]
    return [_softmax_last(ctx, x)]


#: ONNX dtype codes of softmax's `dtype` attribute.
_FLOAT_CODES = {"float16": 10, "float32": 1, "float64": 11}


def _softmax(ctx, op_type: str):
    x = ctx.input(0)
    temperature = ctx.attr_float("temperature")
    if temperature is not None and temperature != 1.0:
        x = ctx.op("Div", [x, ctx.const(temperature, "temperature", dtype=ctx.np_dtype(x))], suffix="temperature")
    axis = ctx.attr_int("axis", -1)
    dtype = ctx.attr_str("dtype")
    last = dtype is None or _FLOAT_CODES[dtype] == ctx.input(0).dtype
    if not ctx.attr_bool("use_length", False):
        out = ctx.op(op_type, [x], {"axis": axis}, suffix=None if last else "softmax")
    else:
        out = _softmax_with_length(ctx, x, axis, None if last else "softmax")
    return [out if last else ctx.op("Cast", [out], {"to": _FLOAT_CODES[dtype]})]


def _softmax_with_length(ctx, x, axis: int, suffix: str | None):
    """MXNet's softmax(data, length, use_length=True): softmax over the first `length` entries
    along `axis` (length has data's shape without that axis); the rest are 0."""
    rank = ctx.need_rank(x, "softmax with use_length")
    axis %= rank
    length = ctx.op("Cast", [ctx.input(1)], {"to": 7}, suffix="length")
    length = ctx.op("Unsqueeze", [length, ctx.ints([axis], "length_axis")], suffix="length_axis")
    size = ctx.op("Shape", [x], {"start": axis, "end": axis + 1}, suffix="size")
    zero, one = ctx.ints([0], "zero"), ctx.ints([1], "one")
    positions = ctx.op("Range", [ctx.op("Squeeze", [zero], suffix="start"), ctx.op("Squeeze", [size], suffix="limit"),
                                 ctx.op("Squeeze", [one], suffix="delta")], suffix="positions")
    positions = ctx.op("Reshape", [positions, ctx.ints([-1] + [1] * (rank - axis - 1), "positions_shape")],
                       suffix="positions_axis")
    mask = ctx.op("Less", [positions, length], suffix="mask")
    lowest = ctx.const(np.finfo(ctx.np_dtype(x)).min, "lowest", dtype=ctx.np_dtype(x))
    out = ctx.op("Softmax", [ctx.op("Where", [mask, x, lowest], suffix="masked")], {"axis": axis}, suffix="masked_softmax")
    return ctx.op("Where", [mask, out, ctx.const(0.0, "zero_out", dtype=ctx.np_dtype(x))], suffix=suffix)


@converter("softmax", onnx="Softmax (use_length: Range, Less, Where)",
           notes="axis, temperature; use_length with the length input (entries past it are 0)",
           values={"use_length": (False, True), "dtype": (None, "float16", "float32", "float64")})
def convert_softmax(node, ctx):
    return _softmax(ctx, "Softmax")


@converter("log_softmax", onnx="LogSoftmax", notes="axis, temperature (MXNet 1.9.1 itself rejects use_length=True here)",
           values={"use_length": (False,), "dtype": (None, "float16", "float32", "float64")})
def convert_log_softmax(node, ctx):
    return _softmax(ctx, "LogSoftmax")


@converter("LogisticRegressionOutput", onnx="Sigmoid", notes="inference output; the label input is dropped")
def convert_logistic_regression_output(node, ctx):
    return [ctx.op("Sigmoid", [ctx.input(0)])]


@converter("LinearRegressionOutput", "MAERegressionOutput", onnx="(none)",
           notes="identity at inference; the label input is dropped")
def convert_linear_regression_output(node, ctx):
    return [ctx.input(0)]


@converter("L2Normalization", onnx="ReduceSumSquare, Add, Sqrt, Div", notes="eps",
           values={"mode": ("instance", "channel", "spatial")})
def convert_l2_normalization(node, ctx):
    x = ctx.input(0)
    mode = ctx.attr_str("mode", "instance")
    eps = ctx.attr_float("eps", 1e-10)
    rank = ctx.need_rank(x, "L2Normalization")
    axes = {"instance": list(range(1, rank)), "channel": [1], "spatial": list(range(2, rank))}.get(mode)
    if axes is None:
        raise ctx.fail(f"mode={mode} is not supported", kind="unsupported_op")
    ss = ctx.op("ReduceSumSquare", [x], {"axes": axes, "keepdims": 1}, suffix="sumsq")
    norm = ctx.op("Sqrt", [ctx.op("Add", [ss, ctx.const(eps, "eps")], suffix="add_eps")], suffix="norm")
    return [ctx.op("Div", [x, norm])]


@converter("LRN", onnx="LRN", notes="alpha, beta, knorm, nsize")
def convert_lrn(node, ctx):
    attrs = {
        "alpha": ctx.attr_float("alpha", 1e-4),
        "beta": ctx.attr_float("beta", 0.75),
        "bias": ctx.attr_float("knorm", 2.0),
        "size": ctx.attr_int("nsize"),
    }
    return [ctx.op("LRN", [ctx.input(0)], attrs)]


@converter("UpSampling", onnx="Resize (nearest)", notes="one input",
           values={"sample_type": ("nearest",), "num_args": (1,)})
def convert_upsampling(node, ctx):
    scale = float(ctx.attr_int("scale"))
    x = ctx.input(0)
    rank = ctx.rank(x) or 4
    scales = ctx.const([1.0, 1.0] + [scale] * (rank - 2), "scales")
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    return [ctx.op("Resize", [x, None, scales], attrs)]


@converter("Embedding", onnx="Gather (indices: Cast, Clip)",
           notes="indices clipped to [0, input_dim - 1] as MXNet does; the output has the weight's type (float32)")
def convert_embedding(node, ctx):
    dim, rows = ctx.attr_int("output_dim"), ctx.attr_int("input_dim")
    w = ctx.weight(1, (rows, dim))
    idx = ctx.op("Cast", [ctx.input(0)], {"to": 7}, suffix="indices")
    idx = ctx.op("Clip", [idx, ctx.const(0, "first", np.int64), ctx.const(rows - 1, "last", np.int64)], suffix="clip")
    return [ctx.op("Gather", [w, idx], {"axis": 0})]
