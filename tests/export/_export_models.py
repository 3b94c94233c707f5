"""Small ONNX test models built with onnx.helper (opset 17 unless stated, dynamic batch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphfix.convert._onnx import make_model

#: The repository root (fixtures/ lives there).
REPO = Path(__file__).resolve().parents[2]

_RNG = np.random.default_rng(1234)


def _seeded(builder):
    """Reseed the weight generator so every call of a builder returns the same model."""
    import functools

    @functools.wraps(builder)
    def wrapper(*args, **kwargs):
        global _RNG
        _RNG = np.random.default_rng(1234)
        return builder(*args, **kwargs)

    return wrapper


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (_RNG.standard_normal(shape) * scale).astype(np.float32)


def _bn_params(prefix: str, c: int) -> list[onnx.TensorProto]:
    return [
        _init(f"{prefix}.scale", (1 + 0.2 * _RNG.standard_normal(c)).astype(np.float32)),
        _init(f"{prefix}.bias", (0.1 * _RNG.standard_normal(c)).astype(np.float32)),
        _init(f"{prefix}.mean", (0.1 * _RNG.standard_normal(c)).astype(np.float32)),
        _init(f"{prefix}.var", (0.5 + _RNG.random(c)).astype(np.float32)),
    ]


def _io(name: str, *dims, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, list(dims))


@_seeded
def view_head(opset: int = 17) -> onnx.ModelProto:
    """torch-style `x.view(x.size(0), -1)` head with Dropout and Identity, dynamic batch."""
    nodes = [
        helper.make_node("Conv", ["data", "conv.w", "conv.b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Shape", ["g"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["s0"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["s0", "axes0"], ["s0u"], name="unsqueeze") if opset >= 13
        else helper.make_node("Unsqueeze", ["s0"], ["s0u"], name="unsqueeze", axes=[0]),
        helper.make_node("Concat", ["s0u", "minus1"], ["newshape"], name="concat", axis=0),
        helper.make_node("Reshape", ["g", "newshape"], ["flat"], name="view"),
        helper.make_node("Dropout", ["flat"], ["d"], name="dropout"),
        helper.make_node("Identity", ["d"], ["i"], name="identity"),
        helper.make_node("Gemm", ["i", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
    ]
    inits = [
        _init("conv.w", _w(8, 3, 3, 3)), _init("conv.b", _w(8)),
        _init("zero", np.array(0, np.int64)), _init("axes0", np.array([0], np.int64)),
        _init("minus1", np.array([-1], np.int64)),
        _init("fc.w", _w(5, 8)), _init("fc.b", _w(5)),
    ]
    graph = helper.make_graph(nodes, "view_head", [_io("data", "N", 3, 16, 16)], [_io("prob", "N", 5)], inits)
    return make_model(graph, opset=opset)


@_seeded
def bn_cnn(width: int = 16, blocks: int = 3, size: int = 32) -> onnx.ModelProto:
    """MobileNet-like: Conv-BN-Relu, depthwise Conv-BN-Relu blocks, GAP, Flatten, Gemm, Softmax."""
    nodes, inits = [], []
    prev, cin = "data", 3
    for b in range(blocks):
        for kind in ("pw", "dw"):
            name = f"b{b}.{kind}"
            group = width if (kind == "dw" and cin == width) else 1
            wshape = (width, cin // group, 3, 3) if kind == "dw" else (width, cin, 1, 1) if b else (width, cin, 3, 3)
            pads = [1, 1, 1, 1] if wshape[2] == 3 else [0, 0, 0, 0]
            stride = [2, 2] if (kind == "dw" and b < 2) else [1, 1]
            inits.append(_init(f"{name}.w", _w(*wshape)))
            nodes.append(helper.make_node("Conv", [prev, f"{name}.w"], [f"{name}.c"], name=f"{name}.conv",
                                          pads=pads, strides=stride, group=group))
            inits += _bn_params(f"{name}.bn", width)
            nodes.append(helper.make_node(
                "BatchNormalization",
                [f"{name}.c", f"{name}.bn.scale", f"{name}.bn.bias", f"{name}.bn.mean", f"{name}.bn.var"],
                [f"{name}.n"], name=f"{name}.bn", epsilon=1e-3))
            nodes.append(helper.make_node("Relu", [f"{name}.n"], [f"{name}.r"], name=f"{name}.relu"))
            prev, cin = f"{name}.r", width
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
    ]
    inits += [_init("fc.w", _w(10, width)), _init("fc.b", _w(10))]
    graph = helper.make_graph(nodes, "bn_cnn", [_io("data", "N", 3, size, size)], [_io("prob", "N", 10)], inits)
    return make_model(graph)


@_seeded
def gemm_bn() -> onnx.ModelProto:
    """Gemm followed by BatchNormalization on [N, F] (BatchNorm1d after Linear)."""
    nodes = [
        helper.make_node("Gemm", ["data", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
        helper.make_node("BatchNormalization", ["y", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["out"], name="bn"),
    ]
    inits = [_init("fc.w", _w(6, 4)), _init("fc.b", _w(6))] + _bn_params("bn", 6)
    graph = helper.make_graph(nodes, "gemm_bn", [_io("data", "N", 4)], [_io("out", "N", 6)], inits)
    return make_model(graph)


@_seeded
def softmax11() -> onnx.ModelProto:
    """Opset 11: 1x1 Conv then Softmax(axis=1) on a 4-D tensor (2-D coercion semantics)."""
    nodes = [
        helper.make_node("Conv", ["data", "conv.w"], ["c"], name="conv"),
        helper.make_node("Softmax", ["c"], ["prob"], name="softmax", axis=1),
    ]
    inits = [_init("conv.w", _w(4, 3, 1, 1))]
    graph = helper.make_graph(nodes, "softmax11", [_io("data", "N", 3, 5, 5)], [_io("prob", "N", 4, 5, 5)], inits)
    return make_model(graph, opset=11)


@_seeded
def swapped(labels: int = 6, thresholds: bool = True) -> onnx.ModelProto:
    """What surgery produces: CNN features -> Gemm `graphfix_head` -> Sigmoid (+ labels), metadata."""
    nodes = [
        helper.make_node("Conv", ["data", "conv.w", "conv.b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Resize", ["r", "", "scales"], ["u"], name="resize", mode="linear"),
        helper.make_node("MaxPool", ["u"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["features"], name="flatten", axis=1),
        helper.make_node("Gemm", ["features", "graphfix_head.weight", "graphfix_head.bias"], ["logits"],
                         name="graphfix_head", transB=1),
        helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="graphfix_sigmoid"),
    ]
    inits = [_init("conv.w", _w(8, 3, 3, 3)), _init("conv.b", _w(8)),
             _init("scales", np.array([1, 1, 2, 2], np.float32)),
             _init("graphfix_head.weight", _w(labels, 8, scale=2.0)), _init("graphfix_head.bias", _w(labels))]
    inits += _bn_params("bn", 8)
    outputs = [_io("logits", "N", labels), _io("probabilities", "N", labels)]
    if thresholds:
        nodes.append(helper.make_node("GreaterOrEqual", ["probabilities", "graphfix_thresholds"], ["labels"],
                                      name="graphfix_labels"))
        inits.append(_init("graphfix_thresholds", np.full(labels, 0.5, np.float32)))
        outputs.append(_io("labels", "N", labels, dtype=TensorProto.BOOL))
    graph = helper.make_graph(nodes, "swapped", [_io("data", "N", 3, 8, 8)], outputs, inits)
    model = make_model(graph)
    helper.set_model_props(model, {"graphfix.labels": '["a","b","c","d","e","f"]', "graphfix.version": "0.1"})
    return model


def fp16_drift(preprocess: dict | None = None, size: int = 8) -> onnx.ModelProto:
    """A swapped model that plain fp16 breaks: features = 1e4 * (Conv(x, 1 + 1e-4 r) - Conv(x, 1)).

    In fp16 the first Conv's weights round to 1 and the features to 0, so the probabilities move
    by ~0.5; keeping `conv_a` fp32 is enough (what `--fp16 auto` finds). `preprocess` is stored
    as `graphfix.preprocess`.
    """
    rng = np.random.default_rng(0)
    r = rng.standard_normal((8, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["data", "a.w"], ["ca"], name="conv_a"),
        helper.make_node("Conv", ["data", "b.w"], ["cb"], name="conv_b"),
        helper.make_node("Sub", ["ca", "cb"], ["d"], name="diff"),
        helper.make_node("Mul", ["d", "gain"], ["m"], name="gain"),
        helper.make_node("Relu", ["m"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["features"], name="flatten"),
        helper.make_node("Gemm", ["features", "graphfix_head.weight", "graphfix_head.bias"], ["logits"],
                         name="graphfix_head", transB=1),
        helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="graphfix_sigmoid"),
    ]
    inits = [_init("a.w", (1.0 + 1e-4 * r).astype(np.float32)), _init("b.w", np.ones((8, 3, 1, 1), np.float32)),
             _init("gain", np.array(1e4, np.float32)),
             _init("graphfix_head.weight", rng.standard_normal((4, 8)).astype(np.float32)),
             _init("graphfix_head.bias", np.zeros(4, np.float32))]
    graph = helper.make_graph(nodes, "fp16_drift", [_io("data", "N", 3, size, size)],
                              [_io("logits", "N", 4), _io("probabilities", "N", 4)], inits)
    model = make_model(graph)
    props = {"graphfix.labels": '["a","b","c","d"]'}
    if preprocess is not None:
        import json

        props["graphfix.preprocess"] = json.dumps(preprocess)
    helper.set_model_props(model, props)
    return model


# ----- deliberately bad models (check finding ids) --------------------------------------------
def bad_upsample() -> onnx.ModelProto:
    """Opset 9 Upsample (deprecated since 10): C6 upsample."""
    nodes = [helper.make_node("Upsample", ["data", "scales"], ["out"], name="up", mode="nearest")]
    inits = [_init("scales", np.array([1, 1, 2, 2], np.float32))]
    graph = helper.make_graph(nodes, "bad_upsample", [_io("data", "N", 3, 4, 4)], [_io("out", "N", 3, 8, 8)], inits)
    return make_model(graph, opset=9)


def bad_maxpool_indices() -> onnx.ModelProto:
    """MaxPool with its Indices output used: C6 maxpool-indices."""
    nodes = [helper.make_node("MaxPool", ["data"], ["out", "idx"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(nodes, "bad_maxpool", [_io("data", "N", 3, 4, 4)],
                              [_io("out", "N", 3, 2, 2), _io("idx", "N", 3, 2, 2, dtype=TensorProto.INT64)])
    return make_model(graph)


def bad_resize_crop() -> onnx.ModelProto:
    """Resize with coordinate_transformation_mode=tf_crop_and_resize: C6 resize-mode."""
    nodes = [helper.make_node("Resize", ["data", "roi", "scales"], ["out"], name="resize", mode="linear",
                              coordinate_transformation_mode="tf_crop_and_resize")]
    inits = [_init("roi", np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32)),
             _init("scales", np.array([1, 1, 2, 2], np.float32))]
    graph = helper.make_graph(nodes, "bad_resize", [_io("data", "N", 3, 4, 4)], [_io("out", "N", 3, 8, 8)], inits)
    return make_model(graph)


@_seeded
def bad_two_dynamic() -> onnx.ModelProto:
    """A second dynamic input dimension (H, W): C8 dynamic-dims."""
    nodes = [helper.make_node("Conv", ["data", "w"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["out"], name="flatten")]
    graph = helper.make_graph(nodes, "bad_dyn", [_io("data", "N", 3, "H", "W")], [_io("out", "N", 4)],
                              [_init("w", _w(4, 3, 1, 1))])
    return make_model(graph)


def bad_training_dropout() -> onnx.ModelProto:
    """Dropout with training_mode=True: C11 dropout-training."""
    nodes = [helper.make_node("Dropout", ["data", "ratio", "train"], ["out"], name="dropout")]
    inits = [_init("ratio", np.array(0.5, np.float32)), _init("train", np.array(True))]
    graph = helper.make_graph(nodes, "bad_dropout", [_io("data", "N", 8)], [_io("out", "N", 8)], inits)
    return make_model(graph)


def bad_string() -> onnx.ModelProto:
    """A STRING tensor (label names as an output): C7 string."""
    names = helper.make_tensor("names", TensorProto.STRING, [2], [b"cat", b"dog"])
    nodes = [helper.make_node("Relu", ["data"], ["out"], name="relu"),
             helper.make_node("Identity", ["names"], ["label_names"], name="names_id")]
    graph = helper.make_graph(nodes, "bad_string", [_io("data", "N", 2)],
                              [_io("out", "N", 2), _io("label_names", 2, dtype=TensorProto.STRING)], [names])
    return make_model(graph)


def bad_if() -> onnx.ModelProto:
    """An If node choosing between two branches: C10 control-flow."""
    then_g = helper.make_graph([helper.make_node("Relu", ["data"], ["t"], name="then_relu")], "then", [],
                               [_io("t", "N", 4)])
    else_g = helper.make_graph([helper.make_node("Neg", ["data"], ["e"], name="else_neg")], "else", [],
                               [_io("e", "N", 4)])
    nodes = [helper.make_node("ReduceSum", ["data"], ["s"], name="sum", keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"], name="greater"),
             helper.make_node("If", ["cond"], ["out"], name="if", then_branch=then_g, else_branch=else_g)]
    graph = helper.make_graph(nodes, "bad_if", [_io("data", "N", 4)], [_io("out", "N", 4)],
                              [_init("zero", np.array(0, np.float32))])
    return make_model(graph)


#: name -> (builder, expected finding id, expected severity, rule)
BAD_MODELS = {
    "upsample": (bad_upsample, "C6", "WARN", "upsample"),
    "maxpool_indices": (bad_maxpool_indices, "C6", "FAIL", "maxpool-indices"),
    "resize_tf_crop_and_resize": (bad_resize_crop, "C6", "FAIL", "resize-mode"),
    "second_dynamic_dim": (bad_two_dynamic, "C8", "FAIL", "dynamic-dims"),
    "training_dropout": (bad_training_dropout, "C11", "FAIL", "dropout-training"),
    "string_tensor": (bad_string, "C7", "FAIL", "string"),
    "if_node": (bad_if, "C10", "WARN", "control-flow"),
}

#: Good models: name -> builder. All must export, check without FAIL and pass parity.
GOOD_MODELS = {
    "view_head": view_head,
    "view_head_opset11": lambda: view_head(opset=11),
    "bn_cnn": bn_cnn,
    "gemm_bn": gemm_bn,
    "softmax11": softmax11,
    "swapped": swapped,
    "swapped_no_thresholds": lambda: swapped(thresholds=False),
}


# ----- torch models -----------------------------------------------------------------------
def torch_view_net(path: str, *, opset: int = 17, dynamo: bool = False) -> str:
    """A torch CNN with Conv-BN, Dropout and a `x.view(x.size(0), -1)` head, exported to `path`."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.bn2 = nn.BatchNorm2d(16)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.drop = nn.Dropout(0.2)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(self.bn2(self.conv2(x)))
            x = self.pool(x)
            x = x.view(x.size(0), -1)
            return torch.softmax(self.fc(self.drop(x)), dim=1)

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(net, (x,), path, dynamo=True, opset_version=opset, input_names=["data"],
                          output_names=["prob"], dynamic_shapes={"x": {0: batch}}, optimize=False)
    else:
        torch.onnx.export(net, (x,), path, dynamo=False, opset_version=opset, input_names=["data"],
                          output_names=["prob"], dynamic_axes={"data": {0: "N"}, "prob": {0: "N"}},
                          training=torch.onnx.TrainingMode.EVAL, do_constant_folding=False)
    return path
