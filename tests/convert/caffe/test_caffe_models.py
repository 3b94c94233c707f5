"""Whole-network parity on the committed fixtures (and the real open_nsfw when fetched) against
OpenCV DNN, batch 1 and 4; swap-head on every classifier keeps the features bit-identical."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from caffe_helpers import PROBES, REPO, assert_parity, feeds_for, make_fixtures, opencv_forward

from graphfix.convert.caffe import load_caffe

CASES = sorted(make_fixtures.FIXTURES)
CLASSIFIERS = sorted(k for k, v in make_fixtures.FIXTURES.items() if v[2])


def _paths(fixture_dir: Path, name: str) -> tuple[str, str]:
    proto, weights, _ = make_fixtures.FIXTURES[name]
    return str(fixture_dir / proto), str(fixture_dir / weights)


@pytest.mark.parametrize("name", CASES)
def test_fixture_parity_with_opencv(fixture_dir, name):
    proto, weights = _paths(fixture_dir, name)
    model = load_caffe(proto, weights)
    outputs = model.output_names
    probed = load_caffe(proto, weights, outputs=outputs + PROBES[name])
    assert probed.output_names == outputs + PROBES[name]
    for batch in (1, 4):
        feeds = feeds_for(model, batch, seed=batch)
        got = probed.run(feeds)
        ref = opencv_forward(proto, weights, feeds, list(got))
        assert_parity(got, ref, f"{name} batch {batch}")


@pytest.mark.parametrize("name", CASES)
def test_fixture_model_is_valid_onnx_with_dynamic_batch(fixture_dir, name, tmp_path):
    proto, weights = _paths(fixture_dir, name)
    model = load_caffe(proto, weights)
    out = model.save(tmp_path / "m.onnx")
    onnx.checker.check_model(str(out), full_check=True)
    m = onnx.load(str(out))
    assert m.opset_import[0].version == 17 and 8 <= m.ir_version <= 10
    for v in list(m.graph.input) + list(m.graph.output):
        assert v.type.tensor_type.shape.dim[0].dim_param == "batch", v.name
    for t in m.graph.initializer:  # no Reshape target bakes in the declared batch
        if t.data_type == onnx.TensorProto.INT64 and t.name.endswith(".shape"):
            assert onnx.numpy_helper.to_array(t)[0] == 0, t.name
    meta = {p.key: p.value for p in m.metadata_props}
    assert '"format":"caffe"' in meta["graphfix.source"]
    assert '"channel_order":"BGR"' in meta["graphfix.preprocess"]


def test_lenet_declared_batch_64_runs_any_batch(fixture_dir):
    proto, weights = _paths(fixture_dir, "lenet")
    model = load_caffe(proto, weights)
    for batch in (1, 64, 65):
        assert model.run(feeds_for(model, batch))["prob"].shape == (batch, 10)


def test_v1_and_v2_caffemodels_give_identical_models(fixture_dir):
    proto, v2 = _paths(fixture_dir, "lenet")
    _, v1 = _paths(fixture_dir, "lenet_v1")
    a, b = load_caffe(proto, v2), load_caffe(proto, v1)
    for name, value in a.graph.initializers.items():
        assert np.array_equal(value.const_value.numpy(), b.graph.initializers[name].const_value.numpy()), name


# ----- head surgery --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_swap_head_keeps_features_bit_identical(fixture_dir, name, tmp_path):
    swap = pytest.importorskip("graphfix.surgery.swap")
    import graphfix as gf
    from tests.conftest import with_outputs

    proto, weights = _paths(fixture_dir, name)
    src = load_caffe(proto, weights)
    head = gf.find_head(src)
    new = gf.swap_head(src, labels=20, seed=0)
    path = new.save(tmp_path / "multilabel.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    reloaded = gf.load(path)
    assert reloaded.output_names == [swap.LOGITS, swap.PROBABILITIES]
    for batch in (1, 4):
        feeds = feeds_for(src, batch, seed=batch)
        ref = with_outputs(src, [head.features]).run(feeds)[head.features]
        got = with_outputs(reloaded, [head.features]).run(feeds)
        assert np.array_equal(ref, got[head.features]), (
            f"{name}: features differ by {np.abs(ref - got[head.features]).max()}"
        )
        assert got[swap.LOGITS].shape == (batch, 20)


# ----- the real open_nsfw (fetched by fixtures/caffe/fetch_nsfw.sh, not committed) -----------------
NSFW_DIR = Path(os.environ.get("GRAPHFIX_NSFW_DIR", REPO / ".cache" / "nsfw"))
NSFW_PROTO = NSFW_DIR / "deploy.prototxt"
NSFW_MODEL = NSFW_DIR / "resnet_50_1by2_nsfw.caffemodel"
needs_nsfw = pytest.mark.skipif(
    not (NSFW_PROTO.is_file() and NSFW_MODEL.is_file()),
    reason=f"open_nsfw not fetched: run `bash fixtures/caffe/fetch_nsfw.sh {NSFW_DIR}` (or set GRAPHFIX_NSFW_DIR)",
)


@needs_nsfw
def test_open_nsfw_parity_with_opencv():
    model = load_caffe(NSFW_PROTO, NSFW_MODEL)
    assert model.preprocess["channel_order"] == "BGR"
    probed = load_caffe(NSFW_PROTO, NSFW_MODEL, outputs=["prob", "fc_nsfw", "pool"])
    for batch in (1, 4):
        rng = np.random.RandomState(batch)
        x = (rng.rand(batch, 3, 224, 224) * 255 - np.array([104, 117, 123]).reshape(1, 3, 1, 1)).astype(np.float32)
        got = probed.run({"data": x})
        ref = opencv_forward(str(NSFW_PROTO), str(NSFW_MODEL), {"data": x}, list(got))
        assert_parity(got, ref, f"open_nsfw batch {batch}")


@needs_nsfw
def test_open_nsfw_batchnorm_factor_is_divided_out():
    from graphfix.convert.caffe._caffemodel import read_caffemodel

    weights = read_caffemodel(NSFW_MODEL)
    factors = {float(b[2][0]) for name, b in weights.blobs.items() if weights.types[name] == "BatchNorm"}
    assert len(factors) == 1 and abs(factors.pop() - 999.98236) < 1e-3
    model = load_caffe(NSFW_PROTO, NSFW_MODEL)
    mean = model.graph.initializers["bn_1.mean"].const_value.numpy()
    assert np.allclose(mean, weights.blobs["bn_1"][0] / weights.blobs["bn_1"][2][0], rtol=1e-6)


@needs_nsfw
def test_open_nsfw_swap_head(tmp_path):
    swap = pytest.importorskip("graphfix.surgery.swap")
    import graphfix as gf
    from tests.conftest import with_outputs

    src = load_caffe(NSFW_PROTO, NSFW_MODEL)
    head = gf.find_head(src)
    assert head.num_features == 1024
    new = gf.swap_head(src, labels=5)
    x = np.random.RandomState(0).randn(2, 3, 224, 224).astype(np.float32) * 50
    ref = with_outputs(src, [head.features]).run({"data": x})[head.features]
    got = with_outputs(new, [head.features]).run({"data": x})
    assert np.array_equal(ref, got[head.features])
    assert got[swap.LOGITS].shape == (2, 5)
    new.save(tmp_path / "nsfw-multilabel.onnx")


@pytest.mark.parametrize("opset", [11, 13])
def test_older_opsets_give_the_same_numbers(fixture_dir, opset):
    for name in ("mtcnn", "ssd_head", "googlenet"):
        proto, weights = _paths(fixture_dir, name)
        ref_model = load_caffe(proto, weights)
        model = load_caffe(proto, weights, opset=opset)
        assert model.opset == opset
        feeds = feeds_for(model, 2, seed=opset)
        got, ref = model.run(feeds), ref_model.run(feeds)
        for key in ref:
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=f"{name} {key}")


def test_committed_fixtures_match_the_generator(tmp_path):
    """make_fixtures.py is deterministic and the committed files are its output."""
    from caffe_helpers import FIXTURES

    make_fixtures.main(str(tmp_path))
    for path in sorted(tmp_path.iterdir()):
        committed = FIXTURES / path.name
        assert committed.is_file() and committed.read_bytes() == path.read_bytes(), f"regenerate {path.name}"
