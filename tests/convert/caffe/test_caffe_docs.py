"""docs/caffe-supported-layers.md is generated from the converter table and kept equal to it."""

from __future__ import annotations

import os

from caffe_helpers import REPO

from graphfix.convert.caffe import NO_ONNX_LAYERS, SUPPORTED_LAYERS
from graphfix.convert.caffe._table import CONVERTERS, supported_layers_markdown

DOC = REPO / "docs" / "caffe-supported-layers.md"


def test_doc_equals_table():
    text = supported_layers_markdown()
    if os.environ.get("GRAPHFIX_UPDATE_DOCS"):
        DOC.write_text(text)
    assert DOC.read_text() == text, "regenerate: GRAPHFIX_UPDATE_DOCS=1 pytest tests/convert/caffe/test_caffe_docs.py"


def test_table_covers_the_issue_layer_list():
    wanted = """Convolution Deconvolution Pooling InnerProduct ReLU PReLU Sigmoid TanH ELU AbsVal BNLL Power
    Exp Log Clip LRN BatchNorm Scale Bias Eltwise Concat Slice Split Flatten Reshape Permute Normalize
    Softmax Dropout Input ArgMax""".split()
    assert set(wanted) <= set(SUPPORTED_LAYERS)
    assert not set(NO_ONNX_LAYERS) & set(SUPPORTED_LAYERS)
    for name, conv in CONVERTERS.items():
        assert conv.summary, f"{name} converter has no docstring"
