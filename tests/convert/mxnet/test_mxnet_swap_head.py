"""swap-head on every classifier fixture: the features are bit-identical before and after."""

from __future__ import annotations

import numpy as np
import pytest

from graphfix.convert.mxnet import load_mxnet
from tests.convert.mxnet.mxnet_helpers import MODELS, model_files

surgery = pytest.importorskip("graphfix.surgery")

CLASSIFIERS = sorted(k for k, v in MODELS.items() if v["classifier"])


def _with_output(model, name):
    from graphfix.model import Model

    work = model.copy()
    value = next(v for n in work.ir.graph for v in n.outputs if v.name == name)
    if value not in work.ir.graph.outputs:
        work.ir.graph.outputs.append(value)
    return Model(work.ir)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_swap_head_keeps_features_bit_identical(name):
    sym, params, ref = model_files(name)
    model = load_mxnet(sym, params, {"": tuple(MODELS[name]["input_shape"])})
    head = surgery.find_head(model)
    swapped = surgery.swap_head(model, labels=20, seed=0)
    assert set(swapped.output_names) >= {"logits", "probabilities"}
    assert [v.name for v in swapped.ir.graph.inputs] == ["data"], "no label input survives"
    x = np.load(ref)["input_b3"]
    before = _with_output(model, head.features).run(x)[head.features]
    after_model = _with_output(swapped, head.features)
    after = after_model.run(x)
    np.testing.assert_array_equal(after[head.features], before)
    assert after["probabilities"].shape == (3, 20)
    if MODELS[name]["made_by"].startswith("mx.sym") or name == "legacy_0x":
        assert head.softmax is not None, f"{name}: SoftmaxOutput is the head's softmax"


def test_swap_head_cli_on_a_module_checkpoint(tmp_path):
    """The headline: graphfix swap-head model-symbol.json --labels 20."""
    import graphfix
    from tests.convert.mxnet.mxnet_helpers import run_cli

    sym, _, _ = model_files("lenet")
    out = tmp_path / "lenet-multilabel.onnx"
    proc = run_cli("swap-head", sym, "--labels", "20", "--input-shape", "data:1,1,28,28", "-o", out)
    assert proc.returncode == 0, proc.stderr
    model = graphfix.load(out)
    assert set(model.output_names) == {"logits", "probabilities"}
    assert model.input_names == ["data"]
    assert model.metadata["source"]["format"] == "mxnet"
