"""The export passes, one module per concern, in the order `export()` runs them.

Each is an onnx-ir `InPlacePass` whose docstring lists the cases it handles; `export()` runs
them on a clone, so the input Model is never changed.
"""

from __future__ import annotations

__all__ = [
    "FoldConstantsPass",
    "RemoveInferenceNoOpsPass",
    "FoldBatchNormPass",
    "ConstantReshapePass",
    "EinsumEquationPass",
    "ConvertOpsetPass",
    "BatchDimPass",
    "Int64RangePass",
    "Float16Pass",
    "HygienePass",
]

from graphfix.convert.export.passes.batch import BatchDimPass
from graphfix.convert.export.passes.batchnorm import FoldBatchNormPass
from graphfix.convert.export.passes.einsum import EinsumEquationPass
from graphfix.convert.export.passes.fold import FoldConstantsPass
from graphfix.convert.export.passes.fp16 import Float16Pass
from graphfix.convert.export.passes.hygiene import HygienePass
from graphfix.convert.export.passes.int64 import Int64RangePass
from graphfix.convert.export.passes.noop import RemoveInferenceNoOpsPass
from graphfix.convert.export.passes.opset import ConvertOpsetPass
from graphfix.convert.export.passes.reshape import ConstantReshapePass
