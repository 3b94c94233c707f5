"""Converters for Caffe's layout layers: concat, slice, reshape, flatten, permute, identities."""

from __future__ import annotations

__all__ = [
    "convert_dropout",
    "convert_split",
    "convert_concat",
    "convert_slice",
    "convert_flatten",
    "convert_reshape",
    "convert_permute",
    "convert_crop",
    "convert_tile",
]

from typing import TYPE_CHECKING

import numpy as np

from graphfix.convert.caffe._table import converter

if TYPE_CHECKING:
    from graphfix.convert.caffe._driver import Context


def _axis(ctx: Context, axis: int, rank: int) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise ctx.unsupported(f"axis {axis} out of range for a {rank}-D blob")
    if a == 0:
        raise ctx.unsupported("along the batch axis (the batch is dynamic)")
    return a


@converter("Dropout")
def convert_dropout(ctx: Context):
    """Dropped (identity at inference)."""
    return [(ctx.input(), ctx.shape())]


@converter("Split")
def convert_split(ctx: Context):
    """Dropped (every top is the bottom)."""
    return [(ctx.input(), ctx.shape()) for _ in ctx.layer.tops]


@converter("Concat")
def convert_concat(ctx: Context):
    """Concat (legacy concat_dim honoured).

    Limits: not along the batch axis.
    """
    p = ctx.param("concat_param")
    shape = ctx.shape()
    axis = _axis(ctx, int(p.concat_dim) if p.concat_dim is not None else p.axis, len(shape))
    total = sum(ctx.shape(i)[axis] for i in range(ctx.n_inputs))
    out = tuple(total if i == axis else d for i, d in enumerate(shape))
    if ctx.n_inputs == 1:
        return [(ctx.op("Identity", [ctx.input()]), out)]
    return [(ctx.op("Concat", [ctx.input(i) for i in range(ctx.n_inputs)], axis=axis), out)]


@converter("Slice")
def convert_slice(ctx: Context):
    """Split at slice_point (or equally into len(top) parts); legacy slice_dim honoured.

    Limits: not along the batch axis.
    """
    p = ctx.param("slice_param")
    shape = ctx.shape()
    axis = _axis(ctx, int(p.slice_dim) if p.slice_dim is not None else p.axis, len(shape))
    n = len(ctx.layer.tops)
    size = shape[axis]
    points = [int(v) for v in p.slice_point]
    if points:
        if len(points) != n - 1 or points != sorted(points) or points[0] <= 0 or points[-1] >= size:
            raise ctx.unsupported(f"slice_point {points} for {n} tops on a dimension of {size}")
        bounds = [0, *points, size]
    else:
        if size % n:
            raise ctx.unsupported(f"dimension {size} does not split equally into {n} tops")
        bounds = [size // n * i for i in range(n + 1)]
    sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    shapes = [tuple(s if i == axis else d for i, d in enumerate(shape)) for s in sizes]
    if n == 1:
        return [(ctx.op("Identity", [ctx.input()]), shapes[0])]
    if ctx.opset >= 13:
        outs = ctx.op_multi("Split", [ctx.input(), ctx.ints(sizes, "split")], n, axis=axis)
    else:
        outs = ctx.op_multi("Split", [ctx.input()], n, axis=axis, split=sizes)
    return list(zip(outs, shapes))


def _reshape(ctx: Context, out_shape: tuple[int, ...]):
    """Reshape keeping dimension 0 (the batch) dynamic: target [0, d1, d2, ...]."""
    if not out_shape or out_shape[0] != ctx.shape()[0]:
        raise ctx.unsupported(f"reshaping {ctx.shape()} to {out_shape} changes the batch axis (the batch is dynamic)")
    y = ctx.op("Reshape", [ctx.input(), ctx.ints([0, *out_shape[1:]], "shape")])
    return [(y, out_shape)]


@converter("Flatten")
def convert_flatten(ctx: Context):
    """Flatten (axis 1 to the end) or Reshape (other axis/end_axis).

    Limits: axis >= 1.
    """
    p = ctx.param("flatten_param")
    shape = ctx.shape()
    rank = len(shape)
    axis = p.axis + rank if p.axis < 0 else p.axis
    end = p.end_axis + rank if p.end_axis < 0 else p.end_axis
    if axis < 1 or end >= rank or end < axis:
        raise ctx.unsupported(f"axis {p.axis} end_axis {p.end_axis} on a {rank}-D blob (the batch axis is dynamic)")
    out = (*shape[:axis], int(np.prod(shape[axis : end + 1], dtype=np.int64)), *shape[end + 1 :])
    if axis == 1 and end == rank - 1:
        return [(ctx.op("Flatten", [ctx.input()], axis=1), out)]
    return _reshape(ctx, out)


@converter("Reshape")
def convert_reshape(ctx: Context):
    """Reshape (dim 0 copies, -1 infers, axis/num_axes sub-range); the batch stays dynamic.

    Limits: the batch dimension must stay dimension 0.
    """
    p = ctx.param("reshape_param")
    shape = ctx.shape()
    rank = len(shape)
    dims = [int(d) for d in p.shape.dim]
    axis = p.axis + rank + 1 if p.axis < 0 else p.axis
    end = rank if p.num_axes == -1 else axis + p.num_axes
    if not 0 <= axis <= end <= rank:
        raise ctx.unsupported(f"axis {p.axis} num_axes {p.num_axes} on a {rank}-D blob")
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            if axis + i >= rank:
                raise ctx.unsupported(f"dim 0 at position {i} copies a dimension the input lacks")
            new.append(shape[axis + i])
        else:
            new.append(d)
    out = [*shape[:axis], *new, *shape[end:]]
    total = int(np.prod(shape, dtype=np.int64))
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise ctx.unsupported(f"shape {dims}")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or total % known:
            raise ctx.unsupported(f"cannot infer -1 in {dims} from {shape}")
        out[out.index(-1)] = total // known
    if int(np.prod(out, dtype=np.int64)) != total:
        raise ctx.unsupported(f"shape {dims} has {int(np.prod(out))} elements, the input {shape} has {total}")
    return _reshape(ctx, tuple(out))


@converter("Permute")
def convert_permute(ctx: Context):
    """Transpose (missing axes appended in order).

    Limits: the batch axis stays first.
    """
    shape = ctx.shape()
    order = [int(o) for o in ctx.param("permute_param").order]
    order += [i for i in range(len(shape)) if i not in order]
    if sorted(order) != list(range(len(shape))):
        raise ctx.unsupported(f"order {order} is not a permutation of {len(shape)} axes")
    if order[0] != 0:
        raise ctx.unsupported(f"order {order} moves the batch axis")
    out = tuple(shape[i] for i in order)
    if order == list(range(len(shape))):
        return [(ctx.op("Identity", [ctx.input()]), out)]
    return [(ctx.op("Transpose", [ctx.input()], perm=order), out)]


@converter("Crop")
def convert_crop(ctx: Context):
    """Slice the first bottom to the second's shape from `axis` on, at `offset`.

    Limits: axis >= 1.
    """
    p = ctx.param("crop_param")
    if ctx.n_inputs != 2:
        raise ctx.unsupported(f"needs 2 bottoms, got {ctx.n_inputs}")
    shape, ref = ctx.shape(0), ctx.shape(1)
    axis = _axis(ctx, p.axis, len(shape))
    axes = list(range(axis, len(shape)))
    offsets = [int(o) for o in p.offset]
    if len(offsets) == 1:
        offsets *= len(axes)
    elif not offsets:
        offsets = [0] * len(axes)
    if len(offsets) != len(axes):
        raise ctx.unsupported(f"{len(offsets)} offsets for {len(axes)} cropped axes")
    ends = [o + ref[a] for o, a in zip(offsets, axes)]
    if any(e > shape[a] for e, a in zip(ends, axes)):
        raise ctx.unsupported(f"crop of {shape} to {ref} at offsets {offsets} runs past the input")
    y = ctx.op("Slice", [ctx.input(), ctx.ints(offsets, "starts"), ctx.ints(ends, "ends"), ctx.ints(axes, "axes")])
    return [(y, (*shape[:axis], *ref[axis:]))]


@converter("Tile")
def convert_tile(ctx: Context):
    """Tile `tiles` times along `axis`.

    Limits: axis >= 1.
    """
    p = ctx.param("tile_param")
    shape = ctx.shape()
    axis = _axis(ctx, p.axis, len(shape))
    if p.tiles < 1:
        raise ctx.unsupported(f"tiles {p.tiles}")
    repeats = [p.tiles if i == axis else 1 for i in range(len(shape))]
    out = tuple(d * r for d, r in zip(shape, repeats))
    return [(ctx.op("Tile", [ctx.input(), ctx.ints(repeats, "repeats")]), out)]
