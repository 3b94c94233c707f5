"""`clean`: the hygiene every written model gets, with semantics unchanged.

Passes, in order (onnx-ir): remove initializers listed as graph inputs; remove unused nodes and
initializers; give every node and value a unique, non-empty name; sort topologically. The IR
version is stamped on save.
"""

from __future__ import annotations

__all__ = ["clean"]

import onnx_ir as ir
from onnx_ir.passes.common import (
    NameFixPass,
    RemoveInitializersFromInputsPass,
    RemoveUnusedNodesPass,
    TopologicalSortPass,
)

from graphfix.model import Model


def clean(model: Model) -> Model:
    """A cleaned copy of `model` (the input is unchanged)."""
    work = model.copy()
    ir.passes.Sequential(
        RemoveInitializersFromInputsPass(),
        RemoveUnusedNodesPass(),
        NameFixPass(),
        TopologicalSortPass(),
    )(work.ir)
    return work
