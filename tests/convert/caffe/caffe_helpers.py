"""Shared helpers for the Caffe importer tests: the fixture writer, OpenCV DNN as the reference."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "fixtures" / "caffe"


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


caffe_writer = _load_module("caffe_writer", FIXTURES / "caffe_writer.py")
make_fixtures = _load_module("caffe_make_fixtures", FIXTURES / "make_fixtures.py")


def last_writers(prototxt: str) -> dict[str, str]:
    """Blob name -> name of the last layer writing it (OpenCV names outputs by layer)."""
    from graphfix.convert.caffe._prototxt import parse_prototxt
    from graphfix.convert.caffe._upgrade import net_layers

    out: dict[str, str] = {}
    for layer in net_layers(parse_prototxt(Path(prototxt).read_text())):
        for t in layer.tops:
            out[t] = layer.name
    return out


def opencv_forward(
    prototxt: str, caffemodel: str | None, feeds: dict[str, np.ndarray], blobs: list[str]
) -> dict[str, np.ndarray]:
    """Run OpenCV DNN (the reference) and return the named blobs."""
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel) if caffemodel else None)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    for name, x in feeds.items():
        net.setInput(x, name)
    writers = last_writers(prototxt)
    # an input blob rewritten in place comes out as "<blob>/<layer>"
    names = [writers[b] if b in writers else writers[b.rsplit("/", 1)[0]] for b in blobs]
    outs = net.forward(names)
    return {b: np.asarray(o) for b, o in zip(blobs, outs)}


def assert_parity(
    got: dict[str, np.ndarray], ref: dict[str, np.ndarray], tag: str, rel: float = 1e-4
) -> dict[str, float]:
    """max |got - ref| <= rel * max(1, max|ref|) on every output; returns the diffs."""
    diffs = {}
    for name, r in ref.items():
        g = got[name]
        assert g.size == r.size, f"{tag}: output {name} has shape {g.shape}, reference {r.shape}"
        r = r.reshape(g.shape)
        diff = float(np.abs(g.astype(np.float64) - r).max()) if g.size else 0.0
        tol = rel * max(1.0, float(np.abs(r).max()) if r.size else 0.0)
        assert diff <= tol, f"{tag}: output {name} max abs diff {diff:.3g} > {tol:.3g}"
        diffs[name] = diff
    return diffs


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory) -> Path:
    """The committed fixtures, regenerated into a temp folder when missing."""
    if (FIXTURES / "lenet.caffemodel").exists():
        return FIXTURES
    out = tmp_path_factory.mktemp("caffe-fixtures")
    make_fixtures.main(str(out))
    return out


#: Intermediate blobs compared too (the logits before a saturating softmax).
PROBES: dict[str, list[str]] = {
    "lenet": ["ip2", "pool2"],
    "lenet_v2proto_v1model": ["ip2"],
    "lenet_v1": ["ip2"],
    "squeezenet": ["conv10", "pool3"],
    "mobilenet": ["flat", "block_3"],
    "googlenet": ["loss3/classifier", "inception_3a/output"],
    "resnet": ["fc10", "pool5"],
    "mtcnn": ["cls_logits"],
    "ssd_head": ["conf_reshape"],
}


def feeds_for(model, batch: int, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input, dimension 0 set to `batch`."""
    rng = np.random.RandomState(seed)
    feeds = {}
    for v in model.ir.graph.inputs:
        shape = [batch] + [int(d) for d in list(v.shape)[1:]]
        feeds[v.name] = (rng.randn(*shape) * scale).astype(np.float32)
    return feeds


def build_and_compare(tmp_path, build, shape=(2, 4, 6, 6), *, ref_fn=None, batches=(1, 3), rel=1e-4, seed=1, **load_kw):
    """Build a one- or few-layer net with `build(b)`, convert it, compare with OpenCV (or `ref_fn`).

    Returns the converted Model and the per-batch diffs.
    """
    from graphfix.convert.caffe import load_caffe

    b = caffe_writer.NetBuilder("t", {"data": tuple(shape)}, seed=seed)
    build(b)
    proto, weights = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    b.save(str(proto), str(weights))
    model = load_caffe(proto, weights, **load_kw)
    diffs = {}
    for batch in batches:
        feeds = feeds_for(model, batch, seed=batch)
        got = model.run(feeds)
        if ref_fn is not None:
            ref = {k: np.asarray(v) for k, v in ref_fn(feeds["data"], b).items()}
        else:
            ref = opencv_forward(str(proto), str(weights), feeds, list(got))
        diffs[batch] = assert_parity(got, ref, f"batch {batch}", rel)
    return model, diffs
