"""Check int64 constants against the int32 range; clamp Slice's INT64 sentinels."""

from __future__ import annotations

__all__ = ["Int64RangePass", "INT32_MIN", "INT32_MAX"]

import logging

import numpy as np
import onnx_ir as ir

from graphfix.convert.export.passes._util import add_initializer, input_at, main_graph_names

logger = logging.getLogger(__name__)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_SMALL = 1 << 16  # elements: larger int64 tensors are data, not shape constants


class Int64RangePass(ir.passes.InPlacePass):
    """Keep int64 constants inside int32 (TensorRT <= 8.6 casts INT64 down and clamps).

    Cases:
        1. Slice `starts`/`ends` constants holding INT64 sentinels (e.g. `ends=INT64_MAX`,
           torch's `x[:, 1:]`) are clamped to the int32 range; this does not change the
           result because no dimension reaches 2**31. A constant also read by other nodes gets
           a clamped copy.
        2. Any other int64 initializer with values outside int32 is left as is and listed
           in `out_of_range` (name, min, max) for the export report and check C7.

    `modified` is True only when case 1 rewrote something.
    """

    def __init__(self) -> None:
        super().__init__()
        self.out_of_range: list[dict] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        taken = main_graph_names(graph)
        modified = False
        self.out_of_range = []
        for node in list(graph):
            if node.op_type != "Slice" or node.domain not in ("", "ai.onnx"):
                continue
            for index in (1, 2):
                value = input_at(node, index)
                if value is None or value.const_value is None or value.dtype != ir.DataType.INT64:
                    continue
                array = value.const_value.numpy()
                clamped = np.clip(array, INT32_MIN, INT32_MAX)
                if np.array_equal(clamped, array):
                    continue
                base = (value.name or "slice") + "_int32"
                node.replace_input_with(index, add_initializer(graph, taken, base, clamped.astype(np.int64)))
                modified = True
        if modified:
            from onnx_ir.passes.common import RemoveUnusedNodesPass

            RemoveUnusedNodesPass()(model)
        for name, value in graph.initializers.items():
            tensor = value.const_value
            if tensor is None or tensor.dtype != ir.DataType.INT64 or tensor.size > _SMALL:
                continue
            array = tensor.numpy()
            if array.size and (array.min() < INT32_MIN or array.max() > INT32_MAX):
                self.out_of_range.append({"name": name, "min": int(array.min()), "max": int(array.max())})
        return ir.passes.PassResult(model, modified)
