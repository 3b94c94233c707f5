"""Per-op tests: one-op graphs made by MXNet 1.9.1, and hand-written symbols against NumPy.

The NumPy functions below restate MXNet's semantics for the cases MXNet's own exporter gets
wrong (pooling_convention='full' average pooling, BatchNorm fix_gamma, PReLU on the channel
axis) and for Reshape's special codes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from graphfix.convert.mxnet import load_mxnet
from graphfix.convert.mxnet.ops_tensor import _Dim, mxnet_reshape
from tests.convert.mxnet.mxnet_helpers import OPS, SymbolBuilder, assert_parity, model_files

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_parity_with_mxnet(name):
    sym, params, ref = model_files(name, op=True)
    model = load_mxnet(sym, params, {"": tuple(OPS[name]["input_shape"])})
    assert_parity(model, ref, name)


# ----- NumPy statements of MXNet semantics -------------------------------------------------
def np_pool_avg(x, k, s, p, full, include_pad=True):
    """MXNet pool (avg, 2-D): out = 1 + floor|ceil((H + 2p - k) / s); the divisor is the window
    clipped to [-p, H + p) (include_pad) or to the input (not include_pad)."""
    n, c, h, w = x.shape
    rnd = math.ceil if full else math.floor
    oh, ow = 1 + rnd((h + 2 * p - k) / s), 1 + rnd((w + 2 * p - k) / s)
    out = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            size = (he - hs) * (we - ws)
            hs0, ws0, he0, we0 = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            if not include_pad:
                size = (he0 - hs0) * (we0 - ws0)
            out[:, :, i, j] = x[:, :, hs0:he0, ws0:we0].sum(axis=(2, 3)) / size
    return out


def _convert(tmp_path, build, heads, shape):
    sym = build.save(tmp_path, heads)
    return load_mxnet(sym, input_shape={"": shape})


@pytest.mark.parametrize("h,w,k,s,p,include", [
    (8, 8, 3, 2, 1, True), (8, 7, 3, 2, 0, True), (9, 9, 3, 2, 1, True), (7, 10, 2, 2, 1, True),
    (8, 8, 3, 2, 1, False), (13, 13, 3, 2, 0, True), (6, 6, 3, 3, 1, True),
])
def test_avg_pool_full_border_rule(tmp_path, h, w, k, s, p, include):
    b = SymbolBuilder()
    b.var("data")
    b.op("Pooling", "pool", ["data"], pool_type="avg", kernel=(k, k), stride=(s, s), pad=(p, p),
         pooling_convention="full", count_include_pad=include)
    x = RNG.normal(size=(2, 3, h, w)).astype(np.float32)
    got = _convert(tmp_path, b, ["pool"], (1, 3, h, w)).run(x)["pool_output"]
    np.testing.assert_allclose(got, np_pool_avg(x.astype(np.float64), k, s, p, True, include), atol=1e-5)


@pytest.mark.parametrize("fix_gamma", [True, False, None])
def test_batchnorm_fix_gamma(tmp_path, fix_gamma):
    c = 4
    gamma, beta = RNG.uniform(0.5, 1.5, c), RNG.normal(size=c)
    mean, var = RNG.normal(size=c), RNG.uniform(0.5, 1.5, c)
    b = SymbolBuilder()
    b.var("data")
    b.var("bn_gamma", gamma), b.var("bn_beta", beta)
    b.var("bn_moving_mean", mean, aux=True), b.var("bn_moving_var", var, aux=True)
    attrs = {} if fix_gamma is None else {"fix_gamma": fix_gamma}
    b.op("BatchNorm", "bn", ["data", "bn_gamma", "bn_beta", "bn_moving_mean", "bn_moving_var"], **attrs)
    x = RNG.normal(size=(2, c, 3, 3)).astype(np.float32)
    got = _convert(tmp_path, b, ["bn"], (1, c, 3, 3)).run(x)["bn_output"]
    g = np.ones(c) if fix_gamma in (True, None) else gamma  # fix_gamma defaults to True
    r = lambda v: v.reshape(1, c, 1, 1)  # noqa: E731
    want = (x - r(mean)) / np.sqrt(r(var) + 1e-3) * r(g) + r(beta)  # eps defaults to 1e-3
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 4, 3, 4), (2, 4, 4, 4), (2, 4, 5), (2, 4)])
def test_prelu_slope_on_channel_axis(tmp_path, shape):
    slope = RNG.uniform(0.05, 0.5, shape[1])
    b = SymbolBuilder()
    b.var("data")
    b.var("act_gamma", slope)
    b.op("LeakyReLU", "act", ["data", "act_gamma"], act_type="prelu")
    x = RNG.normal(size=shape).astype(np.float32)
    got = _convert(tmp_path, b, ["act"], (1,) + shape[1:]).run(x)["act_output"]
    sl = slope.reshape((1, -1) + (1,) * (len(shape) - 2))
    np.testing.assert_allclose(got, np.where(x > 0, x, x * sl), atol=1e-6)


# MXNet's documented Reshape examples (mxnet.ndarray.reshape docstring).
RESHAPE_CASES = [
    ((2, 3, 4), (4, 0, 2), False, (4, 3, 2)),
    ((2, 3, 4), (2, 0, 0), False, (2, 3, 4)),
    ((2, 3, 4), (6, 1, -1), False, (6, 1, 4)),
    ((2, 3, 4), (3, -1, 8), False, (3, 1, 8)),
    ((2, 3, 4), (-1,), False, (24,)),
    ((2, 3, 4), (-2,), False, (2, 3, 4)),
    ((2, 3, 4), (2, -2), False, (2, 3, 4)),
    ((2, 3, 4), (-2, 1, 1), False, (2, 3, 4, 1, 1)),
    ((2, 3, 4, 5), (-3, 4, 5), False, (6, 4, 5)),
    ((2, 3, 4, 5), (-3, -3), False, (6, 20)),
    ((2, 3, 4), (0, -3), False, (2, 12)),
    ((2, 3, 4), (-3, -2), False, (6, 4)),
    ((2, 3, 4), (-4, 1, 2, -2), False, (1, 2, 3, 4)),
    ((2, 3, 4), (2, -4, -1, 3, -2), False, (2, 1, 3, 4)),
    ((10, 5, 4), (-1, 0), False, (40, 5)),
    ((10, 5, 4), (-1, 0), True, (50, 4)),
]


@pytest.mark.parametrize("src,spec,reverse,want", RESHAPE_CASES)
def test_reshape_codes_match_mxnet_docs(src, spec, reverse, want):
    out = mxnet_reshape([_Dim(d) for d in src], spec, reverse)
    assert tuple(d.coef for d in out) == want


def test_reshape_keeps_batch_symbolic(tmp_path):
    b = SymbolBuilder()
    b.var("data")
    b.op("Reshape", "r", ["data"], shape=(0, -3, -2))
    model = _convert(tmp_path, b, ["r"], (1, 2, 3, 4))
    node = next(n for n in model.ir.graph if n.op_type == "Reshape")
    assert list(node.inputs[1].const_value.numpy()) == [0, 6, 4]
    x = RNG.normal(size=(5, 2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.run(x)["r_output"], x.reshape(5, 6, 4))


def test_reshape_batch_moved_uses_minus_one(tmp_path):
    b = SymbolBuilder()
    b.var("data")
    b.op("Reshape", "r", ["data"], shape=(-1, 4))
    model = _convert(tmp_path, b, ["r"], (1, 2, 3, 4))
    node = next(n for n in model.ir.graph if n.op_type == "Reshape")
    assert list(node.inputs[1].const_value.numpy()) == [-1, 4]
    x = RNG.normal(size=(3, 2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.run(x)["r_output"], x.reshape(-1, 4))


def test_fc_after_flatten_emits_one_flatten(tmp_path):
    b = SymbolBuilder()
    b.var("data")
    b.var("fc_weight", RNG.normal(size=(5, 12)))
    b.var("fc_bias", RNG.normal(size=5))
    b.op("Flatten", "flat", ["data"])
    b.op("FullyConnected", "fc", ["flat", "fc_weight", "fc_bias"], num_hidden=5)
    model = _convert(tmp_path, b, ["fc"], (1, 3, 2, 2))
    assert [n.op_type for n in model.ir.graph] == ["Flatten", "Gemm"]


def test_gelu_and_selu_formulas(tmp_path):
    b = SymbolBuilder()
    b.var("data")
    b.op("LeakyReLU", "g", ["data"], act_type="gelu")
    b.op("LeakyReLU", "s", ["data"], act_type="selu")
    x = RNG.normal(size=(2, 7)).astype(np.float32)
    out = _convert(tmp_path, b, ["g", "s"], (1, 7)).run(x)
    erf = np.vectorize(math.erf)
    np.testing.assert_allclose(out["g_output"], 0.5 * x * (1 + erf(x / math.sqrt(2))), atol=1e-6)
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    np.testing.assert_allclose(out["s_output"], scale * np.where(x > 0, x, alpha * (np.exp(x) - 1)), atol=1e-6)


def test_same_value_output_twice_and_dropout_output_get_identity(tmp_path):
    b = SymbolBuilder()
    b.var("data")
    b.op("Dropout", "drop", ["data"], p=0.5)
    model = _convert(tmp_path, b, ["drop", "drop"], (1, 3))
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    outs = model.run(x)
    assert len(outs) == 2
    for v in outs.values():
        np.testing.assert_array_equal(v, x)


# MXNet 1.x (legacy shapes) never returns a 0-d array: what would be 0-d has shape (1,).
@pytest.mark.parametrize("op,attrs,shape,want", [
    ("sum", {}, (2, 3), {1: (1,), 3: (1,)}),
    ("mean", {"axis": (0, 1, 2)}, (2, 3), {1: (1,), 3: (1,)}),
    ("max", {"axis": (0, 1, 2), "keepdims": True}, (2, 3), {1: (1, 1, 1), 3: (1, 1, 1)}),
    ("squeeze", {}, (1, 1), {1: (1,), 3: (3,)}),
    ("squeeze", {}, (1, 4), {1: (4,), 3: (3, 4)}),
    ("squeeze", {"axis": (0, 1)}, (1,), {1: (1,)}),
])
def test_no_zero_d_results(tmp_path, op, attrs, shape, want):
    b = SymbolBuilder()
    b.var("data")
    b.op(op, "o", ["data"], **attrs)
    model = _convert(tmp_path, b, ["o"], (1,) + shape)
    for batch, out_shape in want.items():
        x = RNG.normal(size=(batch,) + shape).astype(np.float32)
        got = model.run(x)["o_output"]
        assert got.shape == out_shape
        ref = getattr(np, op)(x, axis=attrs.get("axis"), **({"keepdims": True} if attrs.get("keepdims") else {}))
        np.testing.assert_allclose(got, np.reshape(ref, out_shape), rtol=1e-5)
