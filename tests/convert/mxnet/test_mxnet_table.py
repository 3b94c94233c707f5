"""The converter table is the only list of supported ops: docs and SUPPORTED_OPS follow it."""

from __future__ import annotations

import graphfix.convert.mxnet as mxnet
from graphfix.convert.mxnet._table import CONVERTERS
from tests.convert.mxnet.mxnet_helpers import REPO

GLUON_ZOO_OPS = {"Convolution", "BatchNorm", "Activation", "Pooling", "FullyConnected", "Flatten", "Dropout",
                 "Concat", "elemwise_add", "clip", "LeakyReLU"}
MODULE_API_OPS = {
    "Deconvolution", "SoftmaxOutput", "SoftmaxActivation", "softmax", "log_softmax", "LogisticRegressionOutput",
    "LinearRegressionOutput", "_Plus", "broadcast_add", "broadcast_sub", "broadcast_mul", "broadcast_div",
    "elemwise_sub", "elemwise_mul", "elemwise_div", "_plus_scalar", "_minus_scalar", "_rminus_scalar",
    "_mul_scalar", "_div_scalar", "_rdiv_scalar", "Reshape", "transpose", "expand_dims", "squeeze",
    "slice_axis", "SliceChannel", "split", "mean", "sum", "L2Normalization", "LRN", "UpSampling", "Cast",
    "Embedding",
}


def test_docs_equal_the_table():
    doc = (REPO / mxnet.OPS_DOC).read_text()
    assert doc == mxnet.ops_markdown(), "regenerate: python -c 'import graphfix.convert.mxnet as m; m.write_ops_doc()'"


def test_supported_ops_cover_the_issue_list():
    assert set(mxnet.SUPPORTED_OPS) == set(CONVERTERS)
    assert GLUON_ZOO_OPS | MODULE_API_OPS <= set(mxnet.SUPPORTED_OPS)
    assert list(mxnet.SUPPORTED_OPS) == sorted(mxnet.SUPPORTED_OPS)


def test_public_names():
    assert set(mxnet.__all__) <= set(dir(mxnet))
    for name in mxnet.__all__:
        assert not name.startswith("_")
