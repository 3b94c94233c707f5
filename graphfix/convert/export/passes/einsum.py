"""Einsum equations in the form TensorRT's parser accepts: lowercase labels, no spaces."""

from __future__ import annotations

__all__ = ["EinsumEquationPass", "normalized_equation"]

import string

import onnx_ir as ir


def normalized_equation(equation: str) -> str | None:
    """`equation` with its labels renamed to lowercase letters (first seen -> a, b, ...) and
    spaces removed, or None when it has more than 26 labels. The rename is one-to-one, so the
    meaning is unchanged: "B G H I D, B G H J D -> B G H I J" becomes "abcde,abcfe->abcdf"."""
    mapping: dict[str, str] = {}
    out = []
    for ch in equation.replace(" ", ""):
        if ch.isalpha():
            if ch not in mapping:
                if len(mapping) == 26:
                    return None
                mapping[ch] = string.ascii_lowercase[len(mapping)]
            out.append(mapping[ch])
        else:
            out.append(ch)
    return "".join(out)


class EinsumEquationPass(ir.passes.InPlacePass):
    """Rewrite every Einsum equation with uppercase labels or spaces (torchvision MaxViT writes
    "B G H I D, ...") to lowercase labels without spaces; TensorRT refuses anything else.
    Already normal equations are left as they are; `modified` says whether any changed."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.op_type != "Einsum" or node.domain not in ("", "ai.onnx") or "equation" not in node.attributes:
                continue
            equation = node.attributes["equation"].as_string()
            new = normalized_equation(equation)
            if new is not None and new != equation:
                node.attributes["equation"] = ir.AttrString("equation", new)
                modified = True
        return ir.passes.PassResult(model, modified)
