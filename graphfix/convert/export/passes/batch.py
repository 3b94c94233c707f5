"""Make the batch dimension the only symbolic one (or fix it), then re-infer shapes."""

from __future__ import annotations

__all__ = ["BatchDimPass"]

import logging

import onnx_ir as ir

from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)


class BatchDimPass(ir.passes.InPlacePass):
    """Make the batch dimension of the image input(s) one symbol (`batch`) or a fixed N.

    Cases:
        1. The batched inputs are those whose dimension 0 is symbolic; when none is, the
           image inputs (rank 4, float or uint8) that share one fixed dimension 0. Other
           inputs (indices, sizes, scalars, a second tensor of its own shape) are left as
           they are: no symbol ties them to the batch. Sequence and optional inputs are
           never batched.
        2. `batch="dynamic"`: dim 0 of each batched input becomes the same symbol (the name
           the model already uses, else `batch`); `batch=N` fixes it to N.
        3. Any other symbolic input dimension is an error (GraphfixError usage, exit 2): TensorRT
           needs a profile range for each; fix it when loading (`--input-shape`).
        4. Intermediate and output shapes are cleared and re-inferred with ONNX shape
           inference (data propagation on); output dim 0 that inference leaves unknown is set
           to the batch symbol when an input is batched. Inputs of rank 0 are left alone.

    When no input shape changes, the known shapes stay and inference only fills gaps. `modified` is True when any input or
    output shape changed.
    """

    def __init__(self, batch: str | int = "dynamic") -> None:
        super().__init__()
        if batch != "dynamic" and (not isinstance(batch, int) or batch < 1):
            raise GraphfixError(f"bad batch {batch!r}", kind="usage", hint="--batch dynamic or a positive N")
        self.batch = batch

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnx_ir.passes.common import ShapeInferencePass

        graph = model.graph
        inputs = [v for v in graph.inputs if not v.is_initializer()]
        before = [(v.name, _dims(v.shape)) for v in [*inputs, *graph.outputs]]
        dim0 = self._batch_dim(inputs)
        batched = _batched(inputs)
        for value in inputs:
            if value.shape is None or len(value.shape) == 0 or not isinstance(value.type, ir.TensorType):
                continue  # scalars, sequences and optionals are left alone
            dims = list(value.shape)
            if value not in batched:
                if any(not isinstance(d, int) for d in dims):
                    axis = next(i for i, d in enumerate(dims) if not isinstance(d, int))
                    raise GraphfixError(
                        f"input {value.name} has a dynamic dimension {axis} ({dims[axis]}); only the batch may be dynamic",
                        kind="usage", hint=f"fix it when loading: --input-shape {value.name}:"
                        + ",".join(str(d) if isinstance(d, int) else "1" for d in dims))
                continue
            for axis, dim in enumerate(dims[1:], 1):
                if not isinstance(dim, int):
                    raise GraphfixError(
                        f"input {value.name} has a dynamic dimension {axis} ({dim}); only the batch may be dynamic",
                        kind="usage", hint=f"fix it when loading: --input-shape {value.name}:1,3,224,224",
                    )
            value.shape = ir.Shape([dim0, *dims[1:]])
        changed = [(v.name, _dims(v.shape)) for v in inputs] != before[:len(inputs)]
        saved = {}
        for node in graph if changed else ():  # no input changed: the shapes stand, gaps are filled
            for out in node.outputs:
                saved[out] = out.shape
                out.shape = None
        untyped = [v for node in ir.traversal.RecursiveGraphIterator(graph) if node.graph is not graph
                   for v in node.outputs if v.type is None]
        result = ShapeInferencePass(strict_mode=False, data_prop=True)(model)
        for value in untyped:  # onnx-ir types an inferred sequence in a subgraph as a tensor: keep it untyped
            value.type = None
        if not result.modified:
            for value, shape in saved.items():
                value.shape = shape
        for value in graph.outputs if batched else ():
            shape = value.shape
            if shape is None or len(shape) == 0:
                continue
            first = shape[0]
            if not isinstance(first, int) and first != dim0:
                value.shape = ir.Shape([dim0, *list(shape)[1:]])
        after = [(v.name, _dims(v.shape)) for v in [*inputs, *graph.outputs]]
        return ir.passes.PassResult(model, after != before)

    def _batch_dim(self, inputs: list[ir.Value]) -> int | ir.SymbolicDim:
        if self.batch != "dynamic":
            return int(self.batch)
        for value in inputs:
            if value.shape is not None and len(value.shape) and isinstance(value.shape[0], ir.SymbolicDim):
                if value.shape[0].value:
                    return ir.SymbolicDim(value.shape[0].value)
        return ir.SymbolicDim("batch")


def _batched(inputs: list[ir.Value]) -> list[ir.Value]:
    """The inputs that carry the batch: symbolic dim 0, else rank-4 float/uint8 images with
    one common fixed dim 0."""
    ranked = [v for v in inputs if v.shape is not None and len(v.shape) > 0 and isinstance(v.type, ir.TensorType)]
    symbolic = [v for v in ranked if not isinstance(v.shape[0], int)]
    if symbolic:
        return symbolic
    images = [v for v in ranked if len(v.shape) == 4 and v.dtype is not None
              and (v.dtype.is_floating_point() or v.dtype == ir.DataType.UINT8)]
    return images if len({v.shape[0] for v in images}) == 1 else []


def _dims(shape: ir.Shape | None):
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) else str(d.value) for d in shape)
