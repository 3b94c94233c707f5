"""Per-layer parity: tiny prototxts with seeded random weights, converted and run in onnxruntime,
compared with OpenCV DNN (the Caffe reference runtime) or, where OpenCV departs from Caffe (Log
params, LRN k, InnerProduct transpose, layers OpenCV lacks), with a NumPy version of Caffe's code.
Tolerance: max abs diff <= 1e-4 * max(1, max|ref|); batch 1 and 3 (the prototxt declares 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from caffe_helpers import build_and_compare

# ----- NumPy versions of Caffe's forward passes (for what OpenCV gets wrong or lacks) ---------


def caffe_pool(x: np.ndarray, mode: str, k: int, s: int, p: int) -> np.ndarray:
    """Caffe's pooling_layer.cpp forward, loops and all (ceil size, AVE divisor with pad, no overhang)."""
    n, c, h, w = x.shape

    def size(i):
        o = int(math.ceil((i + 2 * p - k) / s)) + 1
        return o - 1 if p > 0 and (o - 1) * s >= i + p else o

    oh, ow = size(h), size(w)
    out = np.zeros((n, c, oh, ow), np.float64)
    for ph in range(oh):
        for pw in range(ow):
            hs, ws = ph * s - p, pw * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            area = (he - hs) * (we - ws)
            hs2, ws2, he2, we2 = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs2:he2, ws2:we2]
            if mode == "MAX":
                out[:, :, ph, pw] = win.max(axis=(2, 3))
            else:
                out[:, :, ph, pw] = win.sum(axis=(2, 3)) / area
    return out


# ----- convolution -------------------------------------------------------------------------------
CONV_CASES = [
    dict(nout=8, k=3),
    dict(nout=8, k=3, s=2, p=1),
    dict(nout=8, k=5, s=2, p=2, group=2, bias=False),
    dict(nout=8, k=3, p=2, group=4, dilation=2),
    dict(nout=4, k=(3, 5), s=(2, 1), p=(1, 2)),
    dict(nout=4, k=1, s=3),
    dict(nout=4, k=3, group=4),  # depthwise
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_convolution(tmp_path, case):
    build_and_compare(tmp_path, lambda b: b.conv("conv", "data", **case), (2, 4, 9, 11))


@pytest.mark.parametrize("k,s,p,group", [(3, 1, 0, 1), (4, 2, 1, 1), (3, 2, 1, 2), (2, 2, 0, 4)])
def test_deconvolution(tmp_path, k, s, p, group):
    build_and_compare(tmp_path, lambda b: b.deconv("deconv", "data", 8, k, s, p, group), (2, 4, 5, 6))


def test_convolution_pad_h_w_and_kernel_forms(tmp_path):
    def build(b):
        b.add("c", "Convolution", ["data"], ["c"],
              "convolution_param { num_output: 3 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2 }",
              [b.w(3, 4, 3, 1), b.w(3)])  # fmt: skip

    build_and_compare(tmp_path, build, (2, 4, 6, 7))


# ----- pooling -----------------------------------------------------------------------------------
POOL_CASES = [  # (k, s, p, size): ceil differs from floor, pad with overhang, exact fits
    (3, 2, 0, 56), (3, 2, 0, 22), (2, 2, 0, 7), (3, 2, 1, 7), (3, 2, 1, 8), (3, 3, 1, 10),
    (2, 1, 0, 5), (3, 1, 1, 5), (5, 3, 2, 9), (3, 2, 2, 6),
]  # fmt: skip


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize("k,s,p,size", POOL_CASES)
def test_pooling_matches_opencv_and_caffe(tmp_path, mode, k, s, p, size):
    build_and_compare(tmp_path, lambda b: b.pool("pool", "data", mode, k, s, p), (2, 3, size, size))
    build_and_compare(
        tmp_path,
        lambda b: b.pool("pool", "data", mode, k, s, p),
        (2, 3, size, size),
        ref_fn=lambda x, b: {"pool": caffe_pool(x, mode, k, s, p)},
    )


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
def test_global_pooling(tmp_path, mode):
    model, _ = build_and_compare(tmp_path, lambda b: b.pool("pool", "data", mode, global_=True), (2, 4, 7, 5))
    assert {n.op_type for n in model.graph} == {f"Global{'Max' if mode == 'MAX' else 'Average'}Pool"}


def test_pooling_rectangular(tmp_path):
    def build(b):
        b.add(
            "p",
            "Pooling",
            ["data"],
            ["p"],
            "pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 }",
        )

    build_and_compare(tmp_path, build, (2, 3, 8, 7))


# ----- inner product -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,axis,bias", [((2, 4, 3, 3), 1, True), ((2, 6), 1, False), ((2, 4, 3, 3), 2, True), ((2, 4, 3, 3), 3, True)]
)
def test_inner_product(tmp_path, shape, axis, bias):
    build_and_compare(tmp_path, lambda b: b.ip("ip", "data", 5, axis=axis, bias=bias), shape)


def test_inner_product_transpose(tmp_path):
    """OpenCV ignores `transpose`; Caffe computes x . W with W stored (K, N)."""

    def ref(x, b):
        w, bias = b.layers[0].blobs
        return {"ip": x.reshape(x.shape[0], -1) @ w + bias}

    build_and_compare(tmp_path, lambda b: b.ip("ip", "data", 5, transpose=True), (2, 4, 3, 3), ref_fn=ref)


# ----- activations -------------------------------------------------------------------------------
SIMPLE = [
    ("ReLU", ""),
    ("ReLU", "relu_param { negative_slope: 0.1 }"),
    ("Sigmoid", ""),
    ("TanH", ""),
    ("ELU", "elu_param { alpha: 0.7 }"),
    ("AbsVal", ""),
    ("BNLL", ""),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 0.25 }"),
    ("Power", "power_param { scale: -2 }"),
    ("Exp", ""),
    ("Exp", "exp_param { base: 3 scale: 0.5 shift: 0.1 }"),
    ("Dropout", "dropout_param { dropout_ratio: 0.3 }"),
]


@pytest.mark.parametrize("layer_type,params", SIMPLE, ids=lambda v: v.split(" ")[0] if v else "default")
def test_elementwise_vs_opencv(tmp_path, layer_type, params):
    build_and_compare(tmp_path, lambda b: b.add("act", layer_type, ["data"], ["out"], params))


def test_in_place_chain_keeps_blob_name(tmp_path):
    def build(b):
        b.conv("conv", "data", 4, 3, p=1)
        b.relu("relu", "conv", 0.2)
        b.add("pw", "Power", ["conv"], ["conv"], "power_param { scale: 2 }")

    model, _ = build_and_compare(tmp_path, build)
    assert model.output_names == ["conv"]
    names = [o.name for n in model.graph for o in n.outputs]
    assert len(names) == len(set(names)) and "conv/conv" in names and "conv/relu" in names


@pytest.mark.parametrize(
    "layer_type,params,fn",
    [
        ("Log", "log_param { base: 2 scale: 0.5 shift: 5 }", lambda x: np.log(0.5 * x + 5) / np.log(2)),
        ("Log", "log_param { shift: 5 }", lambda x: np.log(x + 5)),
        ("Clip", "clip_param { min: -0.5 max: 0.7 }", lambda x: np.clip(x, -0.5, 0.7)),
        ("Threshold", "threshold_param { threshold: 0.2 }", lambda x: (x > 0.2).astype(np.float32)),
    ],
    ids=["log2", "ln", "clip", "threshold"],
)
def test_elementwise_vs_numpy(tmp_path, layer_type, params, fn):
    build_and_compare(
        tmp_path, lambda b: b.add("act", layer_type, ["data"], ["out"], params), ref_fn=lambda x, b: {"out": fn(x)}
    )


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_slope_over_channels_when_width_equals_channels(tmp_path, shared):
    build_and_compare(tmp_path, lambda b: b.prelu("prelu", "data", shared), (2, 5, 3, 5))


# ----- normalisation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "region,size,k",
    [("ACROSS_CHANNELS", 5, 1.0), ("ACROSS_CHANNELS", 3, 1.0), ("WITHIN_CHANNEL", 3, 1.0), ("WITHIN_CHANNEL", 5, 1.0)],
)
def test_lrn_vs_opencv(tmp_path, region, size, k):
    build_and_compare(tmp_path, lambda b: b.lrn("lrn", "data", size, 0.5, 0.75, k, region), (2, 6, 7, 7))


def test_lrn_k_vs_numpy(tmp_path):
    """OpenCV ignores k; Caffe divides by (k + alpha/size * sum x^2)^beta."""

    def ref(x, b):
        sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (1, 1), (0, 0), (0, 0)))
        s = sum(sq[:, i : i + x.shape[1]] for i in range(3))
        return {"lrn": x / (2.0 + 0.5 / 3 * s) ** 0.75}

    build_and_compare(tmp_path, lambda b: b.lrn("lrn", "data", 3, 0.5, 0.75, 2.0), (2, 6, 4, 4), ref_fn=ref)


@pytest.mark.parametrize("factor", [999.98236, 1.0, 0.0])
def test_batch_norm_scale_factor(tmp_path, factor):
    build_and_compare(tmp_path, lambda b: (b.bn("bn", "data", factor), b.scale("sc", "data")))


def test_batch_norm_eps_2d(tmp_path):
    build_and_compare(tmp_path, lambda b: b.bn("bn", "data", 3.0, eps=1e-3), (2, 5))


@pytest.mark.parametrize("bias", [True, False])
def test_scale_one_bottom(tmp_path, bias):
    build_and_compare(tmp_path, lambda b: b.scale("sc", "data", bias))


def test_scale_over_two_axes(tmp_path):
    build_and_compare(
        tmp_path,
        lambda b: b.add(
            "sc",
            "Scale",
            ["data"],
            ["o"],
            "scale_param { axis: 1 num_axes: 2 bias_term: true }",
            [b.w(4, 6), b.w(4, 6)],
        ),
    )


def test_scale_two_bottoms(tmp_path):
    def build(b):
        b.pool("gap", "data", "AVE", global_=True)
        b.add("fl", "Flatten", ["gap"], ["g"])
        b.add("sc", "Scale", ["data", "g"], ["o"], "scale_param { axis: 0 }")

    build_and_compare(tmp_path, build)


def test_bias_layer(tmp_path):
    def ref(x, b):
        return {"o": x + b.layers[0].blobs[0][:, None, None]}

    build_and_compare(tmp_path, lambda b: b.add("bias", "Bias", ["data"], ["o"], "", [b.w(4)]), ref_fn=ref)


def test_bias_two_bottoms(tmp_path):
    build_and_compare(
        tmp_path,
        lambda b: (
            b.pool("g", "data", "MAX", global_=True),
            b.add("f", "Flatten", ["g"], ["g2"]),
            b.add("bias", "Bias", ["data", "g2"], ["o"], "bias_param { axis: 0 }"),
        ),
        ref_fn=lambda x, b: {"o": x + x.max(axis=(2, 3)).reshape(x.shape[0], -1)[:, :, None, None]},
    )


@pytest.mark.parametrize("across,shared", [(False, False), (True, True), (False, True), (True, False)])
def test_normalize(tmp_path, across, shared):
    def build(b):
        scale = np.array([20.0], np.float32) if shared else (20 + b.rng.randn(4)).astype(np.float32)
        b.add("norm", "Normalize", ["data"], ["o"],
              f"norm_param {{ across_spatial: {str(across).lower()} channel_shared: {str(shared).lower()} eps: 1e-10 }}", [scale])  # fmt: skip

    def ref(x, b):  # normalize_layer.cpp: x / sqrt(sum x^2 + eps) * scale
        axes = (1, 2, 3) if across else (1,)
        norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=axes, keepdims=True) + 1e-10)
        scale = b.layers[0].blobs[0]
        return {"o": x / norm * (scale if shared else scale[:, None, None])}

    build_and_compare(tmp_path, build, ref_fn=ref)
    if not (across and not shared):  # OpenCV lacks per-channel scale with across_spatial
        build_and_compare(tmp_path, build)


# ----- combining and layout ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "op,coeff", [("SUM", None), ("SUM", [1.0, -1.0]), ("SUM", [0.5, 2.0]), ("PROD", None), ("MAX", None)]
)
def test_eltwise(tmp_path, op, coeff):
    def build(b):
        b.conv("c", "data", 4, 3, p=1)
        b.eltwise("e", ["data", "c"], op, coeff)

    build_and_compare(tmp_path, build)


def test_eltwise_three_bottoms(tmp_path):
    build_and_compare(
        tmp_path,
        lambda b: (
            b.conv("c", "data", 4, 1),
            b.conv("d", "data", 4, 1),
            b.eltwise("e", ["data", "c", "d"], "SUM", [1, 2, -1]),
        ),
    )


@pytest.mark.parametrize("axis", [1, 2, 3, -1])
def test_concat(tmp_path, axis):
    build_and_compare(
        tmp_path,
        lambda b: (
            b.conv("c", "data", 4, 1),
            b.add("cat", "Concat", ["data", "c"], ["o"], f"concat_param {{ axis: {axis} }}"),
        ),
    )


def test_concat_legacy_concat_dim(tmp_path):
    build_and_compare(tmp_path, lambda b: b.add("cat", "Concat", ["data", "data"], ["o"], "concat_param { concat_dim: 2 }"),
                      ref_fn=lambda x, b: {"o": np.concatenate([x, x], axis=2)})  # fmt: skip


@pytest.mark.parametrize(
    "params,tops,split",
    [
        ("slice_param { slice_point: 1 slice_point: 3 }", 3, lambda x: np.split(x, [1, 3], axis=1)),
        ("slice_param { axis: 2 }", 2, lambda x: np.split(x, 2, axis=2)),
        ("slice_param { slice_dim: 3 slice_point: 4 }", 2, lambda x: np.split(x, [4], axis=3)),
    ],
    ids=["points", "equal", "legacy"],
)
def test_slice(tmp_path, params, tops, split):
    names = [f"s{i}" for i in range(tops)]
    build_and_compare(
        tmp_path,
        lambda b: b.add("slice", "Slice", ["data"], names, params),
        ref_fn=lambda x, b: dict(zip(names, split(x))),
    )


def test_split_and_dropout_outputs_keep_blob_names(tmp_path):
    model, _ = build_and_compare(
        tmp_path,
        lambda b: (b.add("split", "Split", ["data"], ["a", "b"]), b.add("drop", "Dropout", ["a"], ["a_drop"])),
        ref_fn=lambda x, b: {"a_drop": x, "b": x},
    )
    assert sorted(model.output_names) == ["a_drop", "b"]


@pytest.mark.parametrize(
    "params",
    [
        "",
        "flatten_param { axis: 1 end_axis: 2 }",
        "flatten_param { axis: 2 }",
        "flatten_param { axis: -2 end_axis: -1 }",
    ],
)
def test_flatten(tmp_path, params):
    build_and_compare(tmp_path, lambda b: b.add("f", "Flatten", ["data"], ["o"], params))


@pytest.mark.parametrize(
    "params",
    [
        "reshape_param { shape { dim: 0 dim: -1 } }",
        "reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 3 } }",
        "reshape_param { shape { dim: 0 dim: -1 dim: 3 } axis: 1 num_axes: 2 }",
        "reshape_param { shape { dim: 2 dim: 2 } axis: 1 num_axes: 1 }",
    ],
)
def test_reshape(tmp_path, params):
    build_and_compare(tmp_path, lambda b: b.add("r", "Reshape", ["data"], ["o"], params))


def test_reshape_negative_axis(tmp_path):
    """Caffe counts a negative axis from the end *plus one* (-1 appends): -2 on 4-D starts at W."""
    build_and_compare(
        tmp_path,
        lambda b: b.add("r", "Reshape", ["data"], ["o"], "reshape_param { shape { dim: 2 dim: -1 } axis: -2 }"),
        ref_fn=lambda x, b: {"o": x.reshape(*x.shape[:3], 2, -1)},
    )


@pytest.mark.parametrize("order", [[0, 2, 3, 1], [0, 3, 1, 2], [0, 1, 3, 2], [0, 2]])
def test_permute(tmp_path, order):
    params = "permute_param { " + " ".join(f"order: {o}" for o in order) + " }"
    full = order + [i for i in range(4) if i not in order]
    build_and_compare(
        tmp_path, lambda b: b.add("p", "Permute", ["data"], ["o"], params), ref_fn=lambda x, b: {"o": x.transpose(full)}
    )
    if len(order) == 4:  # OpenCV needs the full order
        build_and_compare(tmp_path, lambda b: b.add("p", "Permute", ["data"], ["o"], params))


@pytest.mark.parametrize("axis", [1, 2, 3, -1])
@pytest.mark.parametrize("opset", [17, 11])
def test_softmax_any_axis_every_opset(tmp_path, axis, opset):
    build_and_compare(tmp_path, lambda b: b.softmax("prob", "data", axis), opset=opset)


@pytest.mark.parametrize(
    "params",
    [
        "",
        "argmax_param { top_k: 3 }",
        "argmax_param { top_k: 2 out_max_val: true }",
        "argmax_param { axis: 1 }",
        "argmax_param { axis: 2 out_max_val: true top_k: 2 }",
    ],
)
def test_argmax(tmp_path, params):
    def ref(x, b):
        axis = 1 if "axis: 1" in params else 2 if "axis: 2" in params else None
        k = 3 if "top_k: 3" in params else 2 if "top_k: 2" in params else 1
        out_max = "out_max_val" in params
        if axis is None:
            flat = x.reshape(x.shape[0], -1)
            idx = np.argsort(-flat, axis=1, kind="stable")[:, :k]
            vals = np.take_along_axis(flat, idx, 1)
            return {"o": np.stack([idx, vals], 1) if out_max else idx[:, None, :].astype(np.float32)}
        idx = np.argsort(-x, axis=axis, kind="stable").take(range(k), axis=axis)
        return {"o": np.take_along_axis(x, idx, axis) if out_max else idx.astype(np.float32)}

    build_and_compare(tmp_path, lambda b: b.add("am", "ArgMax", ["data"], ["o"], params), ref_fn=ref)


# ----- the extra BVLC layers: Crop, Tile, MVN, Reduction -----------------------------------------
@pytest.mark.parametrize(
    "params", ["", "crop_param { axis: 2 offset: 1 }", "crop_param { axis: 1 offset: 1 offset: 2 offset: 0 }"]
)
def test_crop(tmp_path, params):
    def build(b):
        b.conv("ref", "data", 2, 3)  # (N, 2, 4, 4) from (N, 4, 6, 6)
        b.add("crop", "Crop", ["data", "ref"], ["o"], params)

    def ref(x, b):
        if "axis: 1" in params:
            return {"o": x[:, 1:3, 2:6, 0:4]}
        off = 1 if "offset: 1" in params else 0
        return {"o": x[:, :, off : off + 4, off : off + 4]}

    build_and_compare(tmp_path, build, ref_fn=ref)
    build_and_compare(tmp_path, build)


@pytest.mark.parametrize("axis,tiles", [(1, 3), (2, 2), (-1, 2)])
def test_tile(tmp_path, axis, tiles):
    build_and_compare(
        tmp_path,
        lambda b: b.add("t", "Tile", ["data"], ["o"], f"tile_param {{ axis: {axis} tiles: {tiles} }}"),
        ref_fn=lambda x, b: {"o": np.concatenate([x] * tiles, axis=axis)},
    )


@pytest.mark.parametrize(
    "params", ["", "mvn_param { normalize_variance: false }", "mvn_param { across_channels: true eps: 0.001 }"]
)
def test_mvn(tmp_path, params):
    def ref(x, b):
        axes = (1, 2, 3) if "across_channels" in params else (2, 3)
        eps = 0.001 if "eps" in params else 1e-9
        c = x - x.mean(axis=axes, keepdims=True)
        if "normalize_variance: false" in params:
            return {"o": c}
        return {"o": c / (np.sqrt((c.astype(np.float64) ** 2).mean(axis=axes, keepdims=True)) + eps)}

    build_and_compare(tmp_path, lambda b: b.add("mvn", "MVN", ["data"], ["o"], params), ref_fn=ref)
    if "eps" not in params:  # OpenCV divides by sqrt(var + eps); Caffe by sqrt(var) + eps
        build_and_compare(tmp_path, lambda b: b.add("mvn", "MVN", ["data"], ["o"], params))


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis", [1, 2, -1])
@pytest.mark.parametrize("opset", [17, 18])
def test_reduction(tmp_path, op, axis, opset):
    fns = {
        "SUM": np.sum,
        "ASUM": lambda v, axis: np.abs(v).sum(axis=axis),
        "SUMSQ": lambda v, axis: (v**2).sum(axis=axis),
        "MEAN": np.mean,
    }

    def ref(x, b):
        a = axis % 4
        return {"o": 0.5 * fns[op](x.astype(np.float64), axis=tuple(range(a, 4)))}

    build_and_compare(
        tmp_path,
        lambda b: b.add(
            "r", "Reduction", ["data"], ["o"], f"reduction_param {{ operation: {op} axis: {axis} coeff: 0.5 }}"
        ),
        ref_fn=ref,
        opset=opset,
    )
