"""Fold inference BatchNormalization into the Conv or Gemm that feeds it."""

from __future__ import annotations

__all__ = ["FoldBatchNormPass"]

import logging

import numpy as np
import onnx_ir as ir

from graphfix.convert.export.passes._util import add_initializer, const_array, input_at, main_graph_names, only_consumer

logger = logging.getLogger(__name__)


class FoldBatchNormPass(ir.passes.InPlacePass):
    """Fold `BatchNormalization` into the preceding `Conv` or `Gemm`.

    With `f = scale / sqrt(var + epsilon)` per output channel (computed in float32 in the same
    order as onnxruntime's own ConvBNFusion, so an exported model matches the input run with
    onnxruntime's default optimizations bit for bit on CPU):

    1. `BN(Conv(x, W, b))` -> `Conv(x, W * f[:, None, ...], (b - mean) * f + B)`; `b` is
       zeros when the Conv has no bias. Grouped and depthwise Conv fold the same way (W's
       first axis is always the output channel).
    2. `BN(Gemm(A, B, C))` on a 2-D `[M, N]` output -> `Gemm(A, B * f, (beta*C - mean) * f + B)`
       with `beta = 1`; `B` is scaled along N (its rows when `transB=1`, else its columns) and
       C may be absent, a scalar, `[N]` or `[1, N]`.

    3. A training-mode BN (`training_mode=1`) whose input, scale and B are constants (timm's
       ScaledStdConv standardising its weights, exported by TorchScript) is computed once:
       Y = (X - mean(X)) / sqrt(var(X) + epsilon) * scale + B over every axis but 1, in
       float64, and becomes an initializer. Its running-statistics outputs must be unused.

    Cases 1-2 only fold when: the BN is in inference mode with only its first output used, its four
    parameters are constants, the Conv/Gemm weights (and bias) are constants of a float type,
    and the BN is the only user of the Conv/Gemm output. New initializers are written
    (the originals may be shared); unused ones are removed afterwards. Anything else is kept.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnx_ir.passes.common import RemoveUnusedNodesPass

        graph = model.graph
        taken = main_graph_names(graph)
        modified = False
        for node in list(graph):
            if node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx"):
                if self._try_fold(graph, node, taken):
                    modified = True
        if modified:
            RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)

    def _fold_constant_training(self, graph: ir.Graph, bn: ir.Node, taken: set[str]) -> bool:
        x, scale, bias = (const_array(input_at(bn, i)) for i in range(3))
        if x is None or scale is None or bias is None or x.ndim < 2 or x.dtype.kind != "f" or bn.outputs[0].is_graph_output():
            return False
        axes = tuple(i for i in range(x.ndim) if i != 1)
        shape = [1, -1] + [1] * (x.ndim - 2)
        x64 = x.astype(np.float64)
        eps = bn.attributes.get_float("epsilon", 1e-5)
        y = (x64 - x64.mean(axis=axes, keepdims=True)) / np.sqrt(x64.var(axis=axes, keepdims=True) + eps)
        y = y * scale.astype(np.float64).reshape(shape) + bias.astype(np.float64).reshape(shape)
        value = add_initializer(graph, taken, (bn.outputs[0].name or "bn") + "_folded", y.astype(x.dtype))
        ir.convenience.replace_all_uses_with(bn.outputs[0], value)
        graph.remove(bn, safe=True)
        return True

    def _try_fold(self, graph: ir.Graph, bn: ir.Node, taken: set[str]) -> bool:
        if any(o.uses() or o.is_graph_output() for o in bn.outputs[1:]):
            return False
        if bn.attributes.get_int("training_mode", 0) != 0:
            return self._fold_constant_training(graph, bn, taken)
        if len(bn.inputs) < 5 or bn.inputs[0] is None:
            return False
        params = [const_array(input_at(bn, i)) for i in range(1, 5)]
        if any(p is None for p in params):
            return False
        scale, bias, mean, var = (p.astype(np.float32).reshape(-1) for p in params)
        eps = np.float32(bn.attributes.get_float("epsilon", 1e-5))
        factor = scale / np.sqrt(var + eps)  # float32, in onnxruntime's ConvBNFusion order
        prev = bn.inputs[0].producer()
        if prev is None or prev.domain not in ("", "ai.onnx") or only_consumer(bn.inputs[0]) is not bn:
            return False
        if prev.op_type == "Conv":
            ok = self._fold_conv(graph, prev, factor, bias, mean, taken)
        elif prev.op_type == "Gemm":
            ok = self._fold_gemm(graph, prev, factor, bias, mean, taken)
        else:
            return False
        if not ok:
            return False
        _bypass(bn, prev.outputs[0])
        logger.debug("folded %s into %s", bn.name, prev.name)
        return True

    def _fold_conv(self, graph, conv, factor, bias, mean, taken) -> bool:
        w = const_array(input_at(conv, 1))
        if w is None or w.dtype not in (np.float32, np.float64) or w.shape[0] != factor.size:
            return False
        has_b = input_at(conv, 2) is not None
        b = const_array(conv.inputs[2]) if has_b else np.zeros(w.shape[0], w.dtype)
        if b is None or b.size != factor.size:
            return False
        shape = (-1,) + (1,) * (w.ndim - 1)
        f = factor.astype(w.dtype)
        new_w = (w * f.reshape(shape)).astype(w.dtype)
        if has_b:
            new_b = ((b.reshape(-1) - mean.astype(w.dtype)) * f + bias.astype(w.dtype)).astype(w.dtype)
        else:
            new_b = (bias.astype(w.dtype) - mean.astype(w.dtype) * f).astype(w.dtype)
        base = conv.name or conv.outputs[0].name or "conv"
        conv.replace_input_with(1, add_initializer(graph, taken, f"{base}.weight_bnfold", new_w))
        if len(conv.inputs) < 3:
            conv.resize_inputs(3)
        conv.replace_input_with(2, add_initializer(graph, taken, f"{base}.bias_bnfold", new_b))
        return True

    def _fold_gemm(self, graph, gemm, factor, bias, mean, taken) -> bool:
        if gemm.attributes.get_int("transA", 0) not in (0, 1):
            return False
        b = const_array(input_at(gemm, 1))
        if b is None or b.ndim != 2 or b.dtype not in (np.float32, np.float64):
            return False
        trans_b = gemm.attributes.get_int("transB", 0)
        n = b.shape[0] if trans_b else b.shape[1]
        if n != factor.size:
            return False
        has_c = input_at(gemm, 2) is not None
        c = const_array(gemm.inputs[2]) if has_c else np.zeros(n, b.dtype)
        if c is None or c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1):
            return False
        beta = gemm.attributes.get_float("beta", 1.0)
        c = np.broadcast_to(c.astype(np.float64).reshape(-1), (n,))
        factor = factor.astype(np.float64)
        new_b = b.astype(np.float64) * (factor[:, None] if trans_b else factor[None, :])
        new_c = (beta * c - mean.astype(np.float64)) * factor + bias.astype(np.float64)
        base = gemm.name or gemm.outputs[0].name or "gemm"
        gemm.replace_input_with(1, add_initializer(graph, taken, f"{base}.weight_bnfold", new_b.astype(b.dtype)))
        if len(gemm.inputs) < 3:
            gemm.resize_inputs(3)
        gemm.replace_input_with(2, add_initializer(graph, taken, f"{base}.bias_bnfold", new_c.astype(b.dtype)))
        gemm.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        return True


def _bypass(node: ir.Node, replacement: ir.Value) -> None:
    """Make users of `node`'s first output read `replacement` and remove `node`."""
    y = node.outputs[0]
    graph = node.graph
    if y.is_graph_output():
        name = y.name
        ir.convenience.replace_all_uses_with(y, replacement, replace_graph_outputs=True)
        y.name = None
        replacement.name = name
    else:
        ir.convenience.replace_all_uses_with(y, replacement)
    graph.remove(node, safe=True)
