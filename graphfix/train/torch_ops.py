"""ONNX ops as torch functions: the op table `--train-from` rebuilds a fine-tuned segment with.

`apply(torch, node, inputs, opset)` computes one node in eager torch (a list, one tensor per
output). Integer tensors (shapes, indices) are computed too, so shape subgraphs
(Shape/Gather/Concat feeding Reshape/Expand) are evaluated at the batch's actual shape. Every op
here is checked against onnxruntime by tests/train/test_torch_ops.py; `OPS` is the list an error
names when a segment holds something else.
"""

from __future__ import annotations

__all__ = ["OPS", "TRAINED_INPUTS", "WEIGHT_OPS", "apply", "batch_norm"]

import math
from typing import Any

import numpy as np
import onnx_ir as ir

#: Which inputs of an op are trained when they are float32 initializers.
TRAINED_INPUTS = {
    "Gemm": (1, 2), "MatMul": (0, 1), "Conv": (1, 2), "ConvTranspose": (1, 2), "BatchNormalization": (1, 2),
    "LayerNormalization": (1, 2), "InstanceNormalization": (1, 2), "PRelu": (1,), "Add": (0, 1), "Sub": (0, 1),
    "Mul": (0, 1), "Einsum": tuple(range(8)), "Concat": tuple(range(8)),
}
#: The layers whose weights make a "block" for `--train-from -N` (norms and biases alone do not).
WEIGHT_OPS = ("Gemm", "MatMul", "Conv", "ConvTranspose", "Einsum")

_UNARY = {
    "Relu": lambda t, x: t.relu(x), "Sigmoid": lambda t, x: t.sigmoid(x), "Tanh": lambda t, x: t.tanh(x),
    "Erf": lambda t, x: t.erf(x), "Exp": lambda t, x: t.exp(x), "Log": lambda t, x: t.log(x),
    "Sqrt": lambda t, x: t.sqrt(x), "Neg": lambda t, x: t.neg(x), "Abs": lambda t, x: t.abs(x),
    "Reciprocal": lambda t, x: t.reciprocal(x), "Floor": lambda t, x: t.floor(x), "Ceil": lambda t, x: t.ceil(x),
    "Sin": lambda t, x: t.sin(x), "Cos": lambda t, x: t.cos(x), "Softsign": lambda t, x: x / (1 + x.abs()),
    "Softplus": lambda t, x: t.nn.functional.softplus(x), "Mish": lambda t, x: t.nn.functional.mish(x),
    "HardSwish": lambda t, x: t.nn.functional.hardswish(x), "Not": lambda t, x: t.logical_not(x),
    "Identity": lambda t, x: x, "Dropout": lambda t, x: x, "Sign": lambda t, x: t.sign(x),
}
_BINARY = {
    "Add": lambda t, a, b: a + b, "Sub": lambda t, a, b: a - b, "Mul": lambda t, a, b: a * b,
    "Div": lambda t, a, b: t.div(a, b, rounding_mode="trunc") if not a.is_floating_point() else a / b,
    "Pow": lambda t, a, b: t.pow(a, b), "Equal": lambda t, a, b: a == b, "Less": lambda t, a, b: a < b,
    "Greater": lambda t, a, b: a > b, "LessOrEqual": lambda t, a, b: a <= b, "GreaterOrEqual": lambda t, a, b: a >= b,
    "And": lambda t, a, b: a & b, "Or": lambda t, a, b: a | b, "MatMul": lambda t, a, b: t.matmul(a, b),
}
_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "amax", "ReduceMin": "amin", "ReduceProd": "prod"}
_OTHER = (
    "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "HardSigmoid", "Gelu", "Clip", "Softmax", "LogSoftmax", "Gemm",
    "Einsum", "Conv", "BatchNormalization", "LayerNormalization", "InstanceNormalization", "LRN", "MaxPool",
    "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
    "Concat", "Split", "Slice", "Gather", "Expand", "Tile", "Pad", "Shape", "Size", "Cast", "CastLike",
    "ConstantOfShape", "Range", "Where", "Mod", "Constant", "Max", "Min", "Sum", "Mean", "ReduceL2",
)
#: Every op a fine-tuned segment may hold.
OPS = tuple(sorted({*_UNARY, *_BINARY, *_REDUCE, *_OTHER}))

_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


def _attr(node: ir.Node, name: str, default: Any) -> Any:
    a = node.attributes.get(name)
    if a is None:
        return default
    value = a.value
    return value.decode() if isinstance(value, bytes) else value


def _ints(t: Any) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


def _pad_pairs(pads: list[int], dims: int) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] as torch F.pad pairs (last dim first)."""
    out: list[int] = []
    for d in reversed(range(dims)):
        out += [int(pads[d]), int(pads[d + dims])]
    return out


def _axes(node: ir.Node, ins: list[Any], opset: int, first_opset: int) -> list[int] | None:
    """Axes from the input (opset >= first_opset) or the attribute."""
    if opset >= first_opset:
        return _ints(ins[1]) if len(ins) > 1 and ins[1] is not None else None
    value = _attr(node, "axes", None)
    return None if value is None else [int(v) for v in value]


def _auto_pads(node: ir.Node, x: Any, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """Explicit ONNX pads for auto_pad SAME_UPPER / SAME_LOWER / VALID / NOTSET."""
    dims = len(kernel)
    mode = _attr(node, "auto_pad", "NOTSET")
    if mode in ("NOTSET", ""):
        return list(_attr(node, "pads", [0] * (2 * dims)))
    if mode == "VALID":
        return [0] * (2 * dims)
    begin, end = [], []
    for i in range(dims):
        size = x.shape[2 + i]
        total = max(0, (math.ceil(size / strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else big)
        end.append(big if mode == "SAME_UPPER" else small)
    return begin + end


def _softmax(torch: Any, node: ir.Node, x: Any, opset: int, log: bool) -> Any:
    fn = torch.log_softmax if log else torch.softmax
    if opset >= 13:
        return fn(x, int(_attr(node, "axis", -1)))
    axis = int(_attr(node, "axis", 1)) % x.dim()
    flat = x.reshape(int(np.prod(x.shape[:axis])), -1)
    return fn(flat, 1).reshape(x.shape)


def _conv_pool(torch: Any, node: ir.Node, ins: list[Any]) -> Any:
    F = torch.nn.functional
    op, x = node.op_type, ins[0]
    dims = x.dim() - 2
    kernel = list(_attr(node, "kernel_shape", [])) or list(ins[1].shape[2:])
    strides = list(_attr(node, "strides", [1] * dims))
    dilations = list(_attr(node, "dilations", [1] * dims))
    pads = _auto_pads(node, x, kernel, strides, dilations)
    if op == "Conv":
        padding: Any = 0
        if pads[:dims] == pads[dims:]:
            padding = list(pads[:dims])  # symmetric: the conv pads (no padded copy)
        elif any(pads):
            x = F.pad(x, _pad_pairs(pads, dims))
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
        return conv(x, ins[1], ins[2] if len(ins) > 2 else None, stride=strides, padding=padding,
                    dilation=dilations, groups=int(_attr(node, "group", 1)))
    ceil = bool(_attr(node, "ceil_mode", 0))
    if op == "MaxPool":
        x = F.pad(x, _pad_pairs(pads, dims), value=-math.inf) if any(pads) else x
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
        return pool(x, kernel, strides, 0, dilations, ceil_mode=ceil)
    include = bool(_attr(node, "count_include_pad", 0))
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
    if pads[:dims] == pads[dims:] and all(2 * p <= k for p, k in zip(pads[:dims], kernel)):
        return pool(x, kernel, strides, pads[:dims], ceil_mode=ceil, count_include_pad=include)
    # asymmetric pads: pad explicitly, divide by the count of real (or, with include, padded) cells
    padded = F.pad(x, _pad_pairs(pads, dims))
    total = pool(padded, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)
    if include:
        return total
    ones = F.pad(torch.ones_like(x[:1, :1]), _pad_pairs(pads, dims))
    return total / pool(ones, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)


def batch_norm(torch: Any, node: ir.Node, ins: list[Any], *, update: bool = False) -> Any:
    """BatchNormalization with its running statistics (inference), or, with `update`, normalised by
    the batch's statistics while the running mean/var tensors (`ins[3:5]`) are updated in place
    with torch's semantics: running = (1 - m) running + m batch (unbiased variance), m = 1 - the
    node's ONNX `momentum` (default 0.9, so m = 0.1)."""
    x, scale, bias, mean, var = ins[:5]
    momentum = 1.0 - float(_attr(node, "momentum", 0.9))
    return torch.nn.functional.batch_norm(x, mean, var, scale, bias, training=update, momentum=momentum,
                                          eps=float(_attr(node, "epsilon", 1e-5)))


def apply(torch: Any, node: ir.Node, ins: list[Any], opset: int) -> list[Any]:
    """The outputs of `node` (ONNX semantics at `opset`) from its inputs (torch tensors or None)."""
    op = node.op_type
    if op in _UNARY:
        return [_UNARY[op](torch, ins[0])]
    if op in _BINARY:
        return [_BINARY[op](torch, ins[0], ins[1])]
    if op in _REDUCE:
        return [_reduce(torch, node, ins, opset)]
    if op == "Split":
        return list(_split(torch, node, ins, opset))
    return [_other(torch, node, ins, opset)]


def _reduce(torch: Any, node: ir.Node, ins: list[Any], opset: int) -> Any:
    op, x = node.op_type, ins[0]
    axes = _axes(node, ins, opset, 13 if op == "ReduceSum" else 18)
    keep = bool(_attr(node, "keepdims", 1))
    if not axes:
        if _attr(node, "noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    if op == "ReduceProd":
        for a in sorted((a % x.dim() for a in axes), reverse=True):
            x = x.prod(dim=a, keepdim=keep)
        return x
    return getattr(x, _REDUCE[op])(dim=tuple(axes), keepdim=keep)


def _split(torch: Any, node: ir.Node, ins: list[Any], opset: int) -> Any:
    x, axis = ins[0], int(_attr(node, "axis", 0))
    n = len(node.outputs)
    if opset >= 13 and len(ins) > 1 and ins[1] is not None:
        sizes = _ints(ins[1])
    elif opset < 13 and _attr(node, "split", None) is not None:
        sizes = [int(v) for v in _attr(node, "split", None)]
    else:
        n = int(_attr(node, "num_outputs", n))
        chunk = -(-x.shape[axis] // n)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(n)]
    return torch.split(x, sizes, dim=axis)


def _other(torch: Any, node: ir.Node, ins: list[Any], opset: int) -> Any:  # noqa: C901 - one op table
    F = torch.nn.functional
    op = node.op_type
    x = ins[0] if ins else None
    if op == "Constant":
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            value = _attr(node, key, None)
            if value is not None:
                return torch.from_numpy(np.array(value.numpy() if hasattr(value, "numpy") else value))
        raise ValueError(f"{node.name}: Constant without a supported value")
    if op == "LeakyRelu":
        return F.leaky_relu(x, float(_attr(node, "alpha", 0.01)))
    if op == "PRelu":
        return torch.where(x < 0, x * ins[1], x)
    if op == "Elu":
        return F.elu(x, float(_attr(node, "alpha", 1.0)))
    if op == "Celu":
        return F.celu(x, float(_attr(node, "alpha", 1.0)))
    if op == "Selu":
        a, g = float(_attr(node, "alpha", 1.67326319217681884765625)), float(_attr(node, "gamma", 1.05070102214813232421875))
        return g * torch.where(x > 0, x, a * (torch.exp(x) - 1))
    if op == "HardSigmoid":
        return torch.clamp(float(_attr(node, "alpha", 0.2)) * x + float(_attr(node, "beta", 0.5)), 0, 1)
    if op == "Gelu":
        return F.gelu(x, approximate=_attr(node, "approximate", "none"))
    if op == "Clip":
        lo = ins[1] if len(ins) > 1 and ins[1] is not None else _attr(node, "min", None)
        hi = ins[2] if len(ins) > 2 and ins[2] is not None else _attr(node, "max", None)
        return torch.clamp(x, None if lo is None else float(lo), None if hi is None else float(hi))
    if op in ("Softmax", "LogSoftmax"):
        return _softmax(torch, node, x, opset, op == "LogSoftmax")
    if op == "Gemm":
        a = x.T if _attr(node, "transA", 0) else x
        b = ins[1].T if _attr(node, "transB", 0) else ins[1]
        y = float(_attr(node, "alpha", 1.0)) * (a @ b)
        if len(ins) > 2 and ins[2] is not None:
            y = y + float(_attr(node, "beta", 1.0)) * ins[2]
        return y
    if op == "Einsum":
        return torch.einsum(_attr(node, "equation", ""), *ins)
    if op in ("Conv", "MaxPool", "AveragePool"):
        return _conv_pool(torch, node, ins)
    if op == "GlobalAveragePool":
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
    if op == "GlobalMaxPool":
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)
    if op == "BatchNormalization":
        return batch_norm(torch, node, ins)
    if op == "LayerNormalization":
        axis = int(_attr(node, "axis", -1)) % x.dim()
        eps = float(_attr(node, "epsilon", 1e-5))
        mean = x.mean(dim=tuple(range(axis, x.dim())), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=tuple(range(axis, x.dim())), keepdim=True)
        y = (x - mean) / torch.sqrt(var + eps) * ins[1]
        return y + ins[2] if len(ins) > 2 and ins[2] is not None else y
    if op == "InstanceNormalization":
        return F.instance_norm(x, weight=ins[1], bias=ins[2], eps=float(_attr(node, "epsilon", 1e-5)))
    if op == "LRN":
        size = int(_attr(node, "size", 1))
        sq = F.pad((x * x).unsqueeze(1), (0, 0, 0, 0, (size - 1) // 2, size - 1 - (size - 1) // 2)).squeeze(1)
        total = sq.unfold(1, size, 1).sum(-1)
        alpha, beta, bias = float(_attr(node, "alpha", 1e-4)), float(_attr(node, "beta", 0.75)), float(_attr(node, "bias", 1.0))
        return x / (bias + alpha / size * total) ** beta
    if op == "Flatten":
        axis = int(_attr(node, "axis", 1)) % max(x.dim(), 1) if x.dim() else 0
        return x.reshape(int(np.prod(x.shape[:axis])) if axis else 1, -1)
    if op == "Reshape":
        shape = _ints(ins[1])
        if not _attr(node, "allowzero", 0):
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return x.reshape(shape)
    if op == "Transpose":
        perm = _attr(node, "perm", None)
        return x.permute(*(list(perm) if perm is not None else reversed(range(x.dim()))))
    if op == "Squeeze":
        axes = _axes(node, ins, opset, 13)
        if axes is None:
            return x.squeeze()
        for a in sorted((a % x.dim() for a in axes), reverse=True):
            x = x.squeeze(a)
        return x
    if op == "Unsqueeze":
        axes = _axes(node, ins, opset, 13)
        rank = x.dim() + len(axes)
        for a in sorted(a % rank for a in axes):
            x = x.unsqueeze(a)
        return x
    if op == "Concat":
        return torch.cat([t for t in ins if t is not None], dim=int(_attr(node, "axis", 0)))
    if op == "Slice":
        return _slice(torch, x, ins, node, opset)
    if op == "Gather":
        axis = int(_attr(node, "axis", 0)) % x.dim()
        idx = ins[1].long()
        idx = torch.where(idx < 0, idx + x.shape[axis], idx)
        out = torch.index_select(x, axis, idx.reshape(-1))
        return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))
    if op == "Expand":
        shape = torch.broadcast_shapes(tuple(x.shape), tuple(_ints(ins[1])))
        return x.expand(shape)
    if op == "Tile":
        return x.repeat(*_ints(ins[1]))
    if op == "Pad":
        return _pad(torch, node, ins, opset)
    if op == "Shape":
        dims = list(x.shape)[slice(_attr(node, "start", None), _attr(node, "end", None))]
        return torch.tensor(dims, dtype=torch.int64)
    if op == "Size":
        return torch.tensor(x.numel(), dtype=torch.int64)
    if op in ("Cast", "CastLike"):
        dtype = ins[1].dtype if op == "CastLike" else getattr(torch, _DTYPES[int(_attr(node, "to", 1))])
        return x.to(dtype)
    if op == "ConstantOfShape":
        value = _attr(node, "value", None)
        fill = np.zeros(1, np.float32) if value is None else value.numpy().reshape(-1)
        return torch.full(_ints(x), fill[0].item(), dtype=torch.from_numpy(fill).dtype)
    if op == "Range":
        return torch.arange(ins[0].item(), ins[1].item(), ins[2].item(), dtype=ins[0].dtype)
    if op == "Where":
        return torch.where(x.bool(), ins[1], ins[2])
    if op == "Mod":
        return torch.fmod(x, ins[1]) if _attr(node, "fmod", 0) else torch.remainder(x, ins[1])
    if op in ("Max", "Min", "Sum", "Mean"):
        out = ins[0]
        for t in ins[1:]:
            out = {"Max": torch.maximum, "Min": torch.minimum}.get(op, torch.add)(out, t)
        return out / len(ins) if op == "Mean" else out
    if op == "ReduceL2":
        axes = _axes(node, ins, opset, 18)
        dims = tuple(axes) if axes else tuple(range(x.dim()))
        return torch.sqrt((x * x).sum(dim=dims, keepdim=bool(_attr(node, "keepdims", 1))))
    raise ValueError(f"{node.name} ({op}) is not in the op table")


def _slice(torch: Any, x: Any, ins: list[Any], node: ir.Node, opset: int) -> Any:
    if opset < 10:
        starts, ends = list(_attr(node, "starts", [])), list(_attr(node, "ends", []))
        axes = list(_attr(node, "axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(ins[1]), _ints(ins[2])
        axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for s, e, a, st in zip(starts, ends, axes, steps):
        a %= x.dim()
        n = x.shape[a]
        if st > 0:
            s = max(0, min(n, s + n if s < 0 else s))
            e = max(0, min(n, e + n if e < 0 else e))
            index[a] = slice(s, max(s, e), st)
        else:  # negative step: clamp like ONNX, then pick the indices
            s = max(-1, min(n - 1, s + n if s < 0 else s))
            e = max(-1, min(n - 1, e + n if e < 0 else e))
            x = x.index_select(a, torch.tensor(list(range(s, e, st)), dtype=torch.int64))
    return x[tuple(index)]


def _pad(torch: Any, node: ir.Node, ins: list[Any], opset: int) -> Any:
    F = torch.nn.functional
    x = ins[0]
    if opset >= 11:
        pads = _ints(ins[1])
        value = float(ins[2].item()) if len(ins) > 2 and ins[2] is not None and ins[2].numel() else 0.0
        axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(x.dim()))
    else:
        pads, value, axes = list(_attr(node, "pads", [])), float(_attr(node, "value", 0.0)), list(range(x.dim()))
    full = [0] * (2 * x.dim())
    for i, a in enumerate(axes):
        full[a % x.dim()], full[a % x.dim() + x.dim()] = pads[i], pads[i + len(axes)]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[_attr(node, "mode", "constant")]
    pairs = _pad_pairs(full, x.dim())
    if mode == "constant":
        return F.pad(x, pairs, value=value)
    lead = [p for p in pairs[2 * (x.dim() - 2):]]
    if any(lead):
        raise ValueError(f"{node.name} (Pad): {mode} padding of the batch or channel axis")
    return F.pad(x, pairs[: 2 * (x.dim() - 2)], mode=mode)
