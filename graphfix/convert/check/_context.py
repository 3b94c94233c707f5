"""What every checklist group reads: the model, facts about it, and the findings list."""

from __future__ import annotations

__all__ = ["CheckContext"]

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir

from graphfix.convert.check._report import Finding

logger = logging.getLogger(__name__)


@dataclass
class CheckContext:
    """Shared state of one `check()` run.

    Attributes:
        model: The graphfix Model under check.
        path: Its file, when checked from a file (C1 and C12 use it).
        target: "tensorrt" or "cuda".
        sample_inputs: Feeds for the C14 activation probe.
        max_batch: Largest batch for the C16 profile.
        findings: Collected findings.
    """

    model: Any
    path: str | None
    target: str
    sample_inputs: Any = None
    max_batch: int | None = None
    findings: list[Finding] = field(default_factory=list)
    probe: dict[str, Any] | None = None
    _inferred: dict[str, ir.Value] | None = None

    @property
    def graph(self) -> ir.Graph:
        return self.model.ir.graph

    @property
    def opset(self) -> int:
        return self.model.opset

    @property
    def trt(self) -> bool:
        return self.target == "tensorrt"

    def add(self, id: str, severity: str, message: str, fix: str = "", node: ir.Node | str | None = None, rule: str = "") -> None:
        if isinstance(node, ir.Node):
            node = f"{node.name or '?'} ({node.op_type})"
        self.findings.append(Finding(id, severity, message, fix, node, rule))

    def is_external(self) -> bool:
        return any(isinstance(v.const_value, ir.ExternalTensor) for v in self.graph.initializers.values())

    def weight_bytes(self) -> int:
        total = 0
        for value in self.graph.initializers.values():
            tensor = value.const_value
            if tensor is None or value.dtype == ir.DataType.STRING:
                continue
            total += tensor.nbytes
        return total

    def clone(self) -> ir.Model:
        """A clone of the model to experiment on (tensors shared), sorted topologically.

        onnx-ir cannot clone an unsorted graph; such a graph is copied through serialization.
        """
        from onnx_ir.passes.common import TopologicalSortPass

        try:
            clone = self.model.ir.clone()
        except Exception:
            clone = ir.serde.deserialize_model(ir.serde.serialize_model(self.model.ir))
        TopologicalSortPass()(clone)
        return clone

    def inferred(self) -> dict[str, ir.Value]:
        """Value name -> value with ONNX shape inference applied (data propagation on), cached.

        Runs on a clone whose initializers are left out by onnx-ir, so it is cheap for big models.
        """
        if self._inferred is None:
            from onnx_ir.passes.common import ShapeInferencePass

            clone = self.clone()
            try:
                ShapeInferencePass(strict_mode=False, data_prop=True)(clone)
            except Exception as exc:  # pragma: no cover - the pass already catches
                logger.warning("shape inference failed: %s", exc)
            values: dict[str, ir.Value] = {}
            for v in clone.graph.inputs:
                values[v.name] = v
            for node in clone.graph:
                for o in node.outputs:
                    if o.name:
                        values[o.name] = o
            self._inferred = values
        return self._inferred

    def file_size(self) -> int | None:
        if self.path and os.path.exists(self.path):
            return os.path.getsize(self.path)
        return None
