"""Serving: preprocessing baked into the graph (uint8 images in), Triton model repositories."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

import graphfix as gf
from graphfix.convert.check import check
from graphfix.convert.export import export
from graphfix.convert.export.preprocess import bake_preprocess, random_images, verify_baked
from graphfix.convert.triton import ensure_labels_output, triton_config, write_repository
from graphfix.errors import GraphfixError
from tests.conftest import FIXTURES, run_cli

CAFFE_STYLE = {"size": [32, 32], "channel_order": "BGR", "mean": [104.0, 117.0, 123.0], "scale": 0.017}
TORCH_STYLE = {"size": [32, 32], "pixel_range": 1.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
               "scale": 1.0}


def _calibrated(fixture: str = "cnn_softmax.onnx", preprocess: dict = CAFFE_STYLE, labels_output: bool = True):
    """A swapped fixture with preprocess metadata and thresholds at the median probability."""
    model = gf.swap_head(gf.load(FIXTURES / "onnx" / fixture), labels=5, seed=0).with_metadata(preprocess=preprocess)
    probs = bake_free_probs(model)
    thresholds = [float(v) for v in np.median(probs, axis=0)]
    model = model.with_metadata(thresholds=thresholds)
    return ensure_labels_output(model) if labels_output else model


def bake_free_probs(model) -> np.ndarray:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, *[d for d in model.io_info()["inputs"][0]["shape"][1:]])).astype(np.float32)
    return model.run(x)["probabilities"]


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("fixture,prep", [("cnn_softmax.onnx", CAFFE_STYLE), ("cnn_logsoftmax_op11.onnx", TORCH_STYLE)])
def test_baked_equals_graphfix_preprocessing(fixture, prep, layout):
    model = _calibrated(fixture, prep)
    baked = bake_preprocess(model, layout=layout)
    inp = baked.io_info()["inputs"]
    assert inp == [{"name": "image", "dtype": "UINT8",
                    "shape": ["batch", 32, 32, 3] if layout == "nhwc" else ["batch", 3, 32, 32]}]
    images = random_images(baked, batch=5, seed=3)
    result = verify_baked(model, baked, images)
    assert result["ok"], result
    for name, fig in result["outputs"].items():
        assert fig.get("max_abs_diff", 0) <= 1e-5, (name, fig)
    assert baked.preprocess["baked"]["layout"] == layout.upper()
    assert model.io_info()["inputs"][0]["dtype"] == "FLOAT"  # the input model is unchanged


def test_baked_grayscale_caffe_model():
    model = gf.load(FIXTURES / "caffe" / "lenet.prototxt", weights=FIXTURES / "caffe" / "lenet.caffemodel")
    shape = model.io_info()["inputs"][0]["shape"]
    assert shape[1] == 1
    baked = bake_preprocess(model)
    assert baked.io_info()["inputs"][0]["shape"][1:] == [shape[2], shape[3], 1]
    result = verify_baked(model, baked, random_images(baked, batch=3))
    assert result["ok"], result


def test_baked_resize_close_to_pillow_when_enlarging():
    """The in-graph resize is Pillow's bilinear within one uint8 level when enlarging."""
    from PIL import Image

    from graphfix.data.images import Preprocess
    from graphfix.model import Model

    model = _calibrated()
    baked = bake_preprocess(model, resize_from=(20, 24))
    assert baked.io_info()["inputs"][0]["shape"] == ["batch", 20, 24, 3]
    assert "Resize" in baked.op_histogram() and "Shape" not in baked.op_histogram()
    # expose the preprocessed tensor (the old input's readers' input)
    work = baked.copy()
    div = next(n for n in work.ir.graph if n.name.startswith("graphfix_pre_scale"))
    work.ir.graph.outputs.append(div.outputs[0])
    work = Model(work.ir)
    images = random_images(baked, batch=2, seed=5)
    got = work.run({"image": images}, outputs=[div.outputs[0].name])[div.outputs[0].name]
    prep = Preprocess.for_model(model)
    want = np.stack([prep.apply(Image.fromarray(img)) for img in images])
    level = prep.scale  # one uint8 level after scaling (Pillow computes in fixed point and rounds)
    diff = np.abs(got - want)
    assert diff.max() <= level * 1.001 and diff.mean() < 0.5 * level, (diff.max(), diff.mean())


def test_bake_refuses_bad_models_and_options():
    model = _calibrated()
    with pytest.raises(GraphfixError, match="layout"):
        bake_preprocess(model, layout="nwhc")
    baked = bake_preprocess(model)
    with pytest.raises(GraphfixError, match="already in the graph"):
        bake_preprocess(baked)
    import onnx
    import onnx.helper as oh

    from graphfix.convert._onnx import make_model
    from graphfix.model import Model

    vec = make_model(oh.make_graph([oh.make_node("Sigmoid", ["x"], ["probabilities"])], "vec",
                                   [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8])],
                                   [oh.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", 8])]))
    with pytest.raises(GraphfixError, match=r"\[N,C,H,W\]"):
        bake_preprocess(Model.from_proto(vec).with_metadata(preprocess={"size": [4, 4]}))
    wrong = model.with_metadata(preprocess={**CAFFE_STYLE, "size": [64, 64]})
    with pytest.raises(GraphfixError, match="preprocessing gives"):
        bake_preprocess(wrong)


@pytest.mark.parametrize("where", ["input", "tensor", "initializer"])
def test_baked_input_is_image_when_the_model_already_has_one(where):
    """Issue 22 item 8: the baked input is always `image`; the old `image` is renamed inside."""
    model = _calibrated().copy()
    graph = model.ir.graph
    taken = {"input": graph.inputs[0], "tensor": graph.node(0).outputs[0],
             "initializer": next(v for v in graph.initializers.values() if v.name != "graphfix_head.weight")}[where]
    taken.name = "image"
    before = bake_free_probs(model)
    baked = bake_preprocess(model)
    assert [v["name"] for v in baked.io_info()["inputs"]] == ["image"]
    assert baked.ir.graph.inputs[0].dtype.name == "UINT8" and baked.preprocess["baked"]["input"] == "image"
    names = {v.name for v in baked.ir.graph.initializers.values()} | {o.name for n in baked.ir.graph for o in n.outputs}
    if where != "input":  # the old input itself is gone; a tensor or initializer lives on under a new name
        assert "image_original" in names
    assert verify_baked(model, baked)["ok"]
    assert np.array_equal(bake_free_probs(model), before)  # the input model is unchanged


def test_bake_refuses_an_output_named_image():
    model = _calibrated().copy()
    model.ir.graph.outputs[0].name = "image"
    with pytest.raises(GraphfixError, match="output named 'image', the name of the baked input"):
        bake_preprocess(model)


def test_export_names_the_baked_input(tmp_path):
    model = _calibrated().copy()
    model.ir.graph.inputs[0].name = "image"
    src = tmp_path / "m.onnx"
    model.save(src)
    proc = run_cli("export", src, "--target", "cpu", "--bake-preprocess", "-o", tmp_path / "b.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "  baked input: image uint8 [batch,32,32,3] NHWC RGB" in proc.stdout.splitlines()
    proc = run_cli("export", src, "--target", "cpu", "--bake-preprocess", "--layout", "nchw", "-o", tmp_path / "c.onnx",
                   "--json")
    assert json.loads(proc.stdout)["baked_input"] == {"name": "image", "dtype": "uint8", "shape": ["batch", 3, 32, 32],
                                                      "layout": "NCHW", "channel_order": "RGB"}


def test_round_trip_baked_labels_equal_graphfix_predict(tmp_path):
    """A baked, exported model fed raw decoded images gives `graphfix predict`'s labels."""
    from PIL import Image

    model = _calibrated()
    src = tmp_path / "calibrated.onnx"
    model.save(src)
    rng = np.random.default_rng(11)
    paths = []
    for i in range(12):
        path = tmp_path / f"img{i:02d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    out = tmp_path / "baked.onnx"
    proc = run_cli("export", src, "--bake-preprocess", "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["baked_preprocess"]["ok"] and doc["parity"]["ok"] and doc["report"]["ok"]
    pred = run_cli("predict", src, *paths, "--json")
    assert pred.returncode == 0, pred.stderr
    expected = {p["input"]: p["labels"] for p in json.loads(pred.stdout)["predictions"]}
    assert len({tuple(v) for v in expected.values()}) > 1  # the labels vary between images
    baked = gf.load(out)
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    res = baked.run({"image": images})
    names = model.labels
    got = {p: [names[j] for j in np.flatnonzero(row)] for p, row in zip(paths, res["labels"])}
    assert got == expected
    probs = np.array([[s for s in p["scores"].values()] for p in json.loads(pred.stdout)["predictions"]])
    assert np.abs(probs - res["probabilities"]).max() <= 1e-5


def test_baked_export_passes_tensorrt_check_and_is_deterministic(tmp_path):
    model = _calibrated()
    for fp16 in (False, True):
        baked = bake_preprocess(model, resize_from=(48, 40))
        feeds = {"image": random_images(baked, seed=1)}
        a = export(baked, tmp_path / f"a{int(fp16)}.onnx", fp16=fp16, sample_inputs=feeds)
        b = export(bake_preprocess(model, resize_from=(48, 40)), tmp_path / f"b{int(fp16)}.onnx", fp16=fp16,
                   sample_inputs=feeds)
        assert a.ok and b.ok, a.report.text()
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
        report = check(a.path, target="tensorrt")
        assert report.ok and not report.findings, report.text()


def test_baked_model_builds_with_tensorrt_rtx(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    model = _calibrated()
    for i, (layout, size, fp16) in enumerate([("nhwc", (64, 48), False), ("nchw", None, True)]):
        baked = bake_preprocess(model, layout=layout, resize_from=size)
        result = export(baked, tmp_path / f"m{i}.onnx", fp16=fp16, max_batch=8)
        report = check(result.path, build=True)
        assert report.ok and report.build["status"] == "ok", report.text()
        assert report.build["engine_bytes"] > 0


def _model_config_pb2():
    """Triton's own ModelConfig schema, as shipped by the tritonclient package."""
    tritonclient = pytest.importorskip("tritonclient")
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse_config(text: str):
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    return text_format.Parse(text, pb2.ModelConfig()), pb2


def test_triton_repository_from_cli(tmp_path):
    model = _calibrated(labels_output=False)  # thresholds stored, no `labels` output: --triton adds it
    src = tmp_path / "calibrated.onnx"
    model.save(src)
    repo = tmp_path / "models"
    repo.mkdir()
    proc = run_cli("export", src, "--target", "tensorrt", "--fp16", "--bake-preprocess", "--max-batch", "16",
                   "--triton", repo, "--name", "tagger", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    folder = repo / "tagger"
    assert sorted(doc["triton"]["files"]) == sorted(str(folder / n) for n in ("config.pbtxt", "labels.txt", "1/model.onnx"))
    assert not (tmp_path / "calibrated-tensorrt-fp16.onnx").exists()  # no -o: only the repository
    assert [p.name for p in repo.iterdir()] == ["tagger"]  # no temporary folder left
    config, pb2 = _parse_config((folder / "config.pbtxt").read_text())
    assert config.name == "tagger" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    assert config.HasField("dynamic_batching")
    (inp,) = config.input
    assert (inp.name, inp.data_type, list(inp.dims)) == ("image", pb2.TYPE_UINT8, [32, 32, 3])
    assert inp.format == pb2.ModelInput.FORMAT_NHWC
    outs = {o.name: o for o in config.output}
    assert set(outs) == {"logits", "probabilities", "labels"}
    assert outs["labels"].data_type == pb2.TYPE_BOOL and list(outs["labels"].dims) == [5]
    assert outs["probabilities"].data_type == pb2.TYPE_FP32
    assert outs["probabilities"].label_filename == "labels.txt"
    assert (folder / "labels.txt").read_text().splitlines() == model.labels
    (acc,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU
    served = gf.load(folder / "1" / "model.onnx")
    io = served.io_info()
    assert [o["name"] for o in io["outputs"]] == [o.name for o in config.output]
    res = served.run({"image": random_images(served, batch=3)})
    assert res["labels"].dtype == bool and res["labels"].shape == (3, 5)
    # the same model name again: refused, nothing changed
    again = run_cli("export", src, "--triton", repo, "--name", "tagger")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_triton_config_fixed_batch_and_cpu(tmp_path):
    result = export(_calibrated(), None, target="cpu", batch=4)
    config, pb2 = _parse_config(triton_config(result.model, "fixed", target="cpu"))
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [4, 3, 32, 32]
    assert config.input[0].data_type == pb2.TYPE_FP32
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    files = write_repository(result.model, tmp_path, "fixed", target="cpu")
    assert all(os.path.isfile(f) for f in files)
    with pytest.raises(GraphfixError, match="already exists"):
        write_repository(result.model, tmp_path, "fixed", target="cpu")


@pytest.mark.parametrize("args,message", [
    (["--layout", "nchw"], "need --bake-preprocess"),
    (["--name", "x"], "--name needs --triton"),
    (["--triton", "missing/models"], "missing/models: cannot create the Triton repository: the folder it goes in"),
    (["--triton", "m.onnx"], "m.onnx: is not a folder"),
    (["--triton", ".", "--name", "a/b"], "bad Triton model name"),
    (["--bake-preprocess", "--image-size", "3"], "bad --image-size"),
])
def test_serving_usage_errors(tmp_path, args, message):
    src = tmp_path / "m.onnx"
    _calibrated().save(src)
    proc = run_cli("export", src, *args, "-o", tmp_path / "out.onnx", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("graphfix: error: ")
    assert not (tmp_path / "out.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # nothing made


def test_triton_creates_missing_repository(tmp_path):
    """A repository that does not exist yet is created (its parent exists); the model it serves
    computes the source's outputs."""
    model = _calibrated()
    src = tmp_path / "calibrated.onnx"
    model.save(src)
    repo = tmp_path / "models"
    proc = run_cli("export", src, "--target", "cpu", "--triton", repo, "--name", "tagger", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["triton"]["files"] == [str(repo / "tagger" / n) for n in ("config.pbtxt", "labels.txt", "1/model.onnx")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrated.onnx", "models"]
    assert [p.name for p in repo.iterdir()] == ["tagger"]  # no staging folder left
    assert sorted(p.name for p in (repo / "tagger").iterdir()) == ["1", "config.pbtxt", "labels.txt"]
    assert [p.name for p in (repo / "tagger" / "1").iterdir()] == ["model.onnx"]
    config, _ = _parse_config((repo / "tagger" / "config.pbtxt").read_text())
    assert config.name == "tagger" and config.max_batch_size == 8
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    served = gf.load(repo / "tagger" / "1" / "model.onnx").run(x)
    np.testing.assert_allclose(served["probabilities"], model.run(x)["probabilities"], atol=1e-5)
    # a second model goes into the repository now that it exists
    second = run_cli("export", src, "--target", "cpu", "--triton", repo, "--name", "other", "-q")
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in repo.iterdir()) == ["other", "tagger"]


def test_triton_write_failure_leaves_no_repository(tmp_path, monkeypatch):
    """A write that fails half way (a full disk while saving the model) leaves neither the
    model folder nor the repository folder it created: one GraphfixError naming the file."""
    import errno

    from graphfix.model import Model

    model = export(_calibrated(), None, target="cpu").model

    def full_disk(self, path):
        with open(path, "wb") as fh:
            fh.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as fh.write raises it

    monkeypatch.setattr(Model, "save", full_disk)
    repo = tmp_path / "models"
    with pytest.raises(GraphfixError) as info:
        write_repository(model, repo, "tagger", target="cpu")
    assert info.value.one_line() == f"{repo / 'tagger' / '1' / 'model.onnx'}: cannot write (No space left on device)"
    assert list(tmp_path.iterdir()) == []  # the repository it was creating is gone too
    repo.mkdir()
    with pytest.raises(GraphfixError, match="No space left"):
        write_repository(model, repo, "tagger", target="cpu")
    assert list(repo.iterdir()) == []  # an existing repository is kept, empty as it was
    with pytest.raises(GraphfixError, match="folder it goes in does not exist"):
        write_repository(model, tmp_path / "no" / "models", "tagger", target="cpu")
    assert [p.name for p in tmp_path.iterdir()] == ["models"]
