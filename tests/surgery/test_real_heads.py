"""Heads of real torchvision/timm exports, as small graphs: ReduceMean pooling, bias-free
Linear, distillation pairs, and norm/activation stacks before the classifier.

Each swap with `init_from_old` mapping every old class must reproduce the old logits (the new
head is the old classifier's exact map), checked in onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphfix as gf
from graphfix.convert._onnx import make_model

K = 4
RNG = np.random.default_rng(0)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.asarray(array).dtype), name)


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _model(nodes, inits, x_shape, out="out", opset=17):
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits,
    )
    return gf.Model.from_proto(make_model(graph, opset=opset))


def _stem(f=6):
    """x [N, 3, 4, 4] -> Conv 3x3 -> Relu: a tiny backbone `feat` [N, f, 4, 4]."""
    return ([helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["feat"])], [_init("w0", _f32(f, 3, 3, 3))])


def _pooled(f=6):
    nodes, inits = _stem(f)
    nodes.append(helper.make_node("GlobalAveragePool", ["feat"], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["pooled"]))
    return nodes, inits


def reduce_mean_conv(opset):
    """SqueezeNet under dynamo: 1x1 Conv -> ReduceMean over H, W -> Flatten (without SqueezeNet's
    Relu after the Conv, so that the old head is linear and init_from_old can be exact)."""
    nodes, inits = _stem()
    nodes.append(helper.make_node("Conv", ["feat", "wc", "bc"], ["cls"]))
    nodes.append(helper.make_node("Identity", ["cls"], ["cls_relu"]))
    if opset >= 18:
        inits.append(_init("axes", np.array([-2, -1], np.int64)))
        nodes.append(helper.make_node("ReduceMean", ["cls_relu", "axes"], ["mean"], keepdims=1))
    else:
        nodes.append(helper.make_node("ReduceMean", ["cls_relu"], ["mean"], axes=[2, 3], keepdims=1))
    nodes.append(helper.make_node("Flatten", ["mean"], ["out"]))
    inits += [_init("wc", _f32(K, 6, 1, 1)), _init("bc", _f32(K))]
    return _model(nodes, inits, [3, 4, 4], opset=opset)


def bare_matmul():
    """A bias-free Linear after a norm + activation stack (torchvision MaxViT's classifier)."""
    nodes, inits = _pooled()
    nodes += [
        helper.make_node("LayerNormalization", ["pooled", "ln_s", "ln_b"], ["ln"], axis=-1),
        helper.make_node("Gemm", ["ln", "pre_w", "pre_b"], ["pre"], transB=1),
        helper.make_node("Tanh", ["pre"], ["tanh"]),
        helper.make_node("MatMul", ["tanh", "wm"], ["out"]),
    ]
    inits += [_init("ln_s", _f32(6)), _init("ln_b", _f32(6)), _init("pre_w", _f32(6, 6)), _init("pre_b", _f32(6)),
              _init("wm", _f32(6, K))]
    return _model(nodes, inits, [3, 4, 4])


def gemm_without_c():
    nodes, inits = _pooled()
    nodes += [helper.make_node("HardSwish", ["pooled"], ["act"]),
              helper.make_node("Gemm", ["act", "wg"], ["out"], transB=1, alpha=0.5)]
    inits.append(_init("wg", _f32(K, 6)))
    return _model(nodes, inits, [3, 4, 4])


def distilled(shared: bool, combine: str):
    """(head(x) + head_dist(x')) / 2 (DeiT: x, x' two tokens) or over one shared x (LeViT);
    the second bias is an Identity of the first, as TorchScript writes equal tensors."""
    nodes, inits = _pooled()
    nodes.append(helper.make_node("Relu", ["pooled"], ["other"]))
    second = "pooled" if shared else "other"
    nodes += [
        helper.make_node("Gemm", ["pooled", "w1", "b1"], ["l1"], transB=1),
        helper.make_node("Identity", ["b1"], ["b2"]),
        helper.make_node("MatMul", [second, "w2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["l2"]),
        helper.make_node("Add", ["l1", "l2"], ["sum"]),
    ]
    inits += [_init("w1", _f32(K, 6)), _init("b1", _f32(K)), _init("w2", _f32(6, K))]
    if combine == "div":
        inits.append(_init("two", np.array(2.0, np.float32)))
        nodes.append(helper.make_node("Div", ["sum", "two"], ["avg"]))
    elif combine == "mul":
        inits.append(_init("half", np.array(0.5, np.float32)))
        nodes.append(helper.make_node("Mul", ["sum", "half"], ["avg"]))
    else:
        nodes.append(helper.make_node("Identity", ["sum"], ["avg"]))
    nodes.append(helper.make_node("Softmax", ["avg"], ["out"], axis=1))
    return _model(nodes, inits, [3, 4, 4])


def _old_logits(model: gf.Model, x: np.ndarray) -> np.ndarray:
    """The old classifier's output: the model's output before any Softmax."""
    graph = model.ir.graph
    out = graph.outputs[0]
    prod = out.producer()
    if prod.op_type == "Softmax":
        import onnx

        proto = model.to_proto() if hasattr(model, "to_proto") else onnx.load_from_string(model.to_bytes())
        name = prod.inputs[0].name
        proto.graph.output[0].name = name
        proto.graph.node.remove([n for n in proto.graph.node if n.op_type == "Softmax"][-1])
        return gf.Model.from_proto(proto).run({"x": x})[name]
    return model.run({"x": x})[out.name]


CASES = {
    "reduce_mean_conv_17": (lambda: reduce_mean_conv(17), "conv", "feat"),
    "reduce_mean_conv_18": (lambda: reduce_mean_conv(18), "conv", "feat"),
    "bare_matmul_after_norm_stack": (bare_matmul, "matmul", "tanh"),
    "gemm_without_c": (gemm_without_c, "gemm", "act"),
    "distilled_two_tensors_div": (lambda: distilled(False, "div"), "distilled", "graphfix_head.concat"),
    "distilled_shared_mul": (lambda: distilled(True, "mul"), "distilled", "pooled"),
    "distilled_sum": (lambda: distilled(False, "sum"), "distilled", "graphfix_head.concat"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_head_found_and_init_from_old_is_exact(name):
    make, kind, features = CASES[name]
    model = make()
    head = gf.find_head(model)
    assert head.kind == kind and head.features == features, head.to_dict()
    assert head.num_classes == K
    labels = [f"c{i}" for i in range(K)]
    new = gf.swap_head(model, labels=labels, init_from_old={f"c{i}": i for i in range(K)})
    x = RNG.standard_normal((5, 3, 4, 4)).astype(np.float32)
    got = new.run({"x": x})["logits"]
    want = _old_logits(model, x)
    diff = float(np.max(np.abs(got - want.reshape(got.shape))))
    assert diff <= 1e-5, f"{name}: max abs diff {diff:.3g}"


def test_two_tensor_distilled_head_concatenates_both_parts():
    head = gf.find_head(distilled(False, "div"))
    assert head.parts == ["pooled", "other"] and head.num_features == 12


def test_reduce_mean_over_channels_is_not_pooling():
    nodes, inits = _stem()
    nodes += [helper.make_node("Conv", ["feat", "wc"], ["cls"]),
              helper.make_node("ReduceMean", ["cls"], ["out"], axes=[1], keepdims=0)]
    inits.append(_init("wc", _f32(K, 6, 1, 1)))
    with pytest.raises(gf.GraphfixError, match=r"ReduceMean over axes \[1\]"):
        gf.find_head(_model(nodes, inits, [3, 4, 4]))


def test_refusal_ranks_pooled_features_first_and_the_suggestion_works():
    """A head graphfix does not know (an Mul by a computed gate) is refused; the hint names the
    pooled [N, F] tensor first with the exact --features to try, and that works."""
    nodes, inits = _pooled()
    nodes += [
        helper.make_node("Gemm", ["pooled", "w1", "b1"], ["logits_old"], transB=1),
        helper.make_node("Sigmoid", ["pooled"], ["gate"]),
        helper.make_node("ReduceMean", ["gate"], ["g"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["logits_old", "g"], ["out"]),
    ]
    inits += [_init("w1", _f32(K, 6)), _init("b1", _f32(K))]
    model = _model(nodes, inits, [3, 4, 4])
    with pytest.raises(gf.GraphfixError) as info:
        gf.find_head(model)
    line = info.value.one_line()
    assert "try --features pooled" in line and "\n" not in line, line
    assert gf.find_head(model, features="pooled").num_features == 6
