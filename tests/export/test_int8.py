"""export --int8: QDQ structure, accuracy budget, --int8 auto, determinism, early refusals, threshold re-fit.

The models are tiny two-conv swapped nets with a trained, calibrated head. "Hostile" data puts a
channel of +-1000 beside the two channels that carry the labels: one per-tensor int8 scale for the
input of conv1 wipes those out (the mAP falls), while conv2's input quantizes harmlessly.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from graphfix.cli import main
from graphfix.convert._onnx import make_model
from graphfix.model import Model, load_onnx

LABELS = ["a", "b", "c", "d"]


def _backbone(seed: int = 0, convs: int = 2) -> Model:
    """data [N,3,4,4] -> conv1 -> Relu [-> conv2 -> Relu] -> GAP -> Flatten -> graphfix_head Gemm -> Sigmoid."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 3, 1, 1)).astype(np.float32)
    w1[:, 0] *= 1e-4  # channel 0 (the +-1000 one) barely reaches the features
    w2 = (np.eye(8)[:, :, None, None] + 0.1 * rng.standard_normal((8, 8, 1, 1))).astype(np.float32)
    nodes = [
        oh.make_node("Conv", ["data", "w1", "b1"], ["c1"], name="conv1"),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        *([oh.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
           oh.make_node("Relu", ["c2"], ["r2"], name="relu2")] if convs == 2 else []),
        oh.make_node("GlobalAveragePool", ["r2" if convs == 2 else "r1"], ["gap"], name="gap"),
        oh.make_node("Flatten", ["gap"], ["features"], name="flatten"),
        oh.make_node("Gemm", ["features", "graphfix_head.weight", "graphfix_head.bias"], ["logits"],
                     name="graphfix_head", transB=1),
        oh.make_node("Sigmoid", ["logits"], ["probabilities"], name="graphfix_sigmoid"),
    ]
    inits = [onnx.numpy_helper.from_array(a, n) for n, a in (
        ("w1", w1), ("b1", np.full(8, 0.5, np.float32)),
        *((("w2", w2), ("b2", np.zeros(8, np.float32))) if convs == 2 else ()),
        ("graphfix_head.weight", (0.01 * rng.standard_normal((4, 8))).astype(np.float32)),
        ("graphfix_head.bias", np.zeros(4, np.float32)))]
    graph = oh.make_graph(nodes, "int8", [oh.make_tensor_value_info("data", onnx.TensorProto.FLOAT, ["N", 3, 4, 4])],
                          [oh.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 4]),
                           oh.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", 4])], inits)
    proto = make_model(graph)
    oh.set_model_props(proto, {"graphfix.labels": json.dumps(LABELS)})
    return Model.from_proto(proto)


def _data(model: Model, n: int, seed: int, hostile: bool):
    """x [n,3,4,4] (channel 0 +-1000 when hostile) and labels learnable from the fp32 features."""
    from graphfix.data.features import feature_model

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 4, 4)).astype(np.float32)
    x[:, 0] = rng.choice([-1000.0, 1000.0], size=(n, 4, 4)) if hostile else 0.0
    feats = feature_model(model).run(x)["features"]
    proj = np.random.default_rng(7).standard_normal((feats.shape[1], len(LABELS)))
    z = (feats - feats.mean(0)) / (feats.std(0) + 1e-6) @ proj
    return x, (z + 0.3 * rng.standard_normal(z.shape) > 0.3).astype(np.uint8)


def _make(folder, hostile: bool, convs: int = 2) -> dict:
    """A trained + calibrated model file, its untrained base and train/heldout NPZ files."""
    import graphfix as gf
    from graphfix.data.datasets import Dataset

    base = _backbone(convs=convs)
    files: dict = {}
    for split, n, seed in (("train", 160, 1), ("heldout", 120, 2)):
        x, y = _data(base, n, seed, hostile)
        files[split] = str(folder / f"{split}.npz")
        np.savez(files[split], x=x, y=y)
    trained, _ = gf.train_head(base, Dataset.from_arrays(*_npz(files["train"]), LABELS), cache=False)
    th = gf.fit_thresholds(trained, Dataset.from_arrays(*_npz(files["heldout"]), LABELS), cache=False)
    files["model"] = str(folder / "calibrated.onnx")
    gf.apply_thresholds(trained, th).save(files["model"])
    files["untrained"] = str(folder / "untrained.onnx")
    base.save(files["untrained"])
    return files


@pytest.fixture(scope="module")
def benign(tmp_path_factory):
    return _make(tmp_path_factory.mktemp("int8-benign"), hostile=False)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return _make(tmp_path_factory.mktemp("int8-hostile"), hostile=True)


def _npz(path: str):
    with np.load(path) as d:
        return d["x"], d["y"]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _qdq(path: str) -> dict:
    proto = onnx.load(path)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    return {"proto": proto, "inits": inits, "producers": producers, "nodes": {n.name: n for n in proto.graph.node}}


def test_qdq_structure_weights_per_channel_head_fp32(benign, tmp_path, capsys):
    setup = benign
    out = tmp_path / "int8.onnx"
    rc, _, err = _cli(capsys, "export", setup["model"], "--int8", "--calibration", setup["train"], "-o", out, "-q")
    assert rc == 0, err
    g = _qdq(str(out))
    for conv in ("conv1", "conv2"):
        node = g["nodes"][conv]
        x_dq, w_dq = g["producers"][node.input[0]], g["producers"][node.input[1]]
        assert x_dq.op_type == w_dq.op_type == "DequantizeLinear"
        # weights: int8 initializer, one scale per output channel on axis 0, zero points 0
        w, scale, zp = (g["inits"][i] for i in w_dq.input)
        axis = {a.name: a.i for a in w_dq.attribute}["axis"]
        assert w.dtype == np.int8 and w.shape == (8, 3 if conv == "conv1" else 8, 1, 1)
        assert axis == 0 and scale.shape == (8,) and (scale > 0).all() and zp.dtype == np.int8 and not zp.any()
        # activations: one int8 scale, zero point 0, Q -> DQ
        q = g["producers"][x_dq.input[0]]
        assert q.op_type == "QuantizeLinear"
        a_scale, a_zp = g["inits"][q.input[1]], g["inits"][q.input[2]]
        assert a_scale.shape == () and a_zp.dtype == np.int8 and a_zp == 0
        assert node.input[2] in g["inits"] and g["inits"][node.input[2]].dtype == np.float32  # bias stays fp32
    # conv outputs are not quantized: TensorRT fuses the DQ -> Conv -> (Relu) -> Q of the next layer
    assert all(u.op_type != "QuantizeLinear" for u in g["proto"].graph.node if "c1" in u.input or "c2" in u.input)
    # the head: fp32 weights, no Q/DQ feeding or reading it
    head = g["nodes"]["graphfix_head"]
    assert g["inits"]["graphfix_head.weight"].dtype == np.float32
    head_values = set(head.input) | {"logits", "probabilities"}
    for node in g["proto"].graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert not head_values & (set(node.input) | set(node.output)), node.name
    assert g["producers"]["features"].op_type == "Flatten"
    meta = {p.key: p.value for p in g["proto"].metadata_props}
    info = json.loads(meta["graphfix.int8"])
    assert info["method"] == "percentile" and info["float_nodes"] == []
    assert info["weights"] == "per-channel symmetric int8" and info["activations"] == "per-tensor symmetric int8"
    assert info["calibration_rows"] == 128  # 160 rows, a seeded 20% (32) set aside to measure on
    assert info["quantizer"].startswith("onnxruntime.quantization ")
    assert set(info["accuracy"]) >= {"fp32", "int8", "mAP_drop", "largest_class_f1_drop", "measured_on"}
    # the int8 file runs and stays close to fp32 on benign data
    x, _ = _npz(setup["heldout"])
    ref = load_onnx(setup["model"]).run({"data": x})["probabilities"]
    got = load_onnx(str(out)).run({"data": x})["probabilities"]
    assert 0 < np.abs(ref - got).mean() < 0.02, np.abs(ref - got).mean()
    # the file keeps every explicit-quantization rule `check --target tensorrt` knows (C17)
    rc, stdout, err = _cli(capsys, "check", out, "--target", "tensorrt", "--json")
    findings = json.loads(stdout)["findings"]
    assert rc == 0 and not [f for f in findings if f["severity"] != "INFO"], findings
    assert [f["rule"] for f in findings if f["id"] == "C17"] == ["qdq-summary"]


def test_over_budget_is_refused_with_the_figures_and_nothing_written(hostile, tmp_path, capsys):
    setup = hostile
    out = tmp_path / "int8.onnx"
    rc, stdout, err = _cli(capsys, "export", setup["model"], "--int8", "--calibration", setup["train"],
                           "--heldout", setup["heldout"], "-o", out, "--json")
    assert rc == 1 and not out.exists() and not list(tmp_path.iterdir())
    acc = json.loads(stdout)["int8"]["accuracy"]
    a, b, worst = acc["fp32"], acc["int8"], acc["largest_class_f1_drop"]
    assert acc["mAP_drop"] > 0.005 and acc["rows"] == 120
    assert err == (
        f"graphfix: error: {setup['model']}: int8 accuracy over budget: mAP {a['mAP']:.4f} -> {b['mAP']:.4f} "
        f"(drop {acc['mAP_drop']:.4f} > 0.005), micro-F1 {a['micro_f1']:.4f} -> {b['micro_f1']:.4f}, "
        f"macro-F1 {a['macro_f1']:.4f} -> {b['macro_f1']:.4f}, largest class F1 drop {worst['drop']:.4f} "
        f"({worst['label']}), on 120 rows of --heldout heldout.npz (nothing was written; try --int8 auto (keeps the "
        "most sensitive layers unquantized), another --int8-method or more --calibration rows)\n")


def test_int8_auto_keeps_the_sensitive_layer_within_budget(hostile, tmp_path, capsys):
    setup = hostile
    out = tmp_path / "auto.onnx"
    rc, stdout, err = _cli(capsys, "export", setup["model"], "--int8", "auto", "--calibration", setup["train"],
                           "--heldout", setup["heldout"], "-o", out)
    assert rc == 0, err
    assert re.search(r"int8 auto: 1 of 2 layers kept unquantized \(\d+ tries\): conv1 \(they run fp16 under "
                     r"TensorRT when the engine enables fp16, else fp32\)", stdout)
    g = _qdq(str(out))
    info = json.loads({p.key: p.value for p in g["proto"].metadata_props}["graphfix.int8"])
    assert info["float_nodes"] == ["conv1"] and info["accuracy"]["mAP_drop"] <= 0.005
    conv1, conv2 = g["nodes"]["conv1"], g["nodes"]["conv2"]
    assert conv1.input[0] == "data" and conv1.input[1] == "w1" and g["inits"]["w1"].dtype == np.float32
    assert g["producers"][conv2.input[1]].op_type == "DequantizeLinear"
    # the figures stored are those of the model written
    x, y = _npz(setup["heldout"])
    from graphfix.calibrate.calibration import evaluate

    got = load_onnx(str(out)).run({"data": x})["probabilities"]
    thresholds = np.asarray(json.loads(load_onnx(setup["model"]).ir.metadata_props["graphfix.thresholds"]), np.float32)
    assert evaluate(got, y, thresholds, LABELS)["mAP"] == info["accuracy"]["int8"]["mAP"]


def test_int8_auto_refuses_when_only_float_holds_the_budget(tmp_path, capsys):
    one = _make(tmp_path, hostile=True, convs=1)  # conv1 is the only layer, and int8 ruins it
    out = tmp_path / "auto.onnx"
    rc, _, err = _cli(capsys, "export", one["model"], "--int8", "auto", "--calibration", one["train"],
                      "--heldout", one["heldout"], "-o", out, "-q")
    assert rc == 1 and not out.exists()
    assert err.startswith(f"graphfix: error: {one['model']}: int8 auto: the budget holds only with every layer "
                          "unquantized; with every layer int8: mAP ")


def test_same_inputs_give_a_byte_identical_file(benign, tmp_path, capsys):
    setup = benign
    digests = []
    for name in ("a.onnx", "b.onnx"):
        rc, _, err = _cli(capsys, "export", setup["model"], "--int8", "--int8-method", "entropy", "--calibration",
                          setup["train"], "--heldout", setup["heldout"], "-o", tmp_path / name, "-q")
        assert rc == 0, err
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert b"graphfix-int8-" not in (tmp_path / "a.onnx").read_bytes()  # no temporary path inside


def test_thresholds_are_refit_on_int8_scores_and_stored(benign, tmp_path, capsys):
    setup = benign
    from graphfix.calibrate.calibration import fit_thresholds_from_scores

    out = tmp_path / "int8.onnx"
    rc, stdout, err = _cli(capsys, "export", setup["model"], "--int8", "--calibration", setup["train"],
                           "--heldout", setup["heldout"], "-o", out)
    assert rc == 0, err
    assert "thresholds re-fitted on the int8 scores (f1, 120 held-out rows) and stored" in stdout
    m = load_onnx(str(out))
    x, y = _npz(setup["heldout"])
    outs = m.run({"data": x})
    expected = fit_thresholds_from_scores(outs["probabilities"], y, "f1", labels=LABELS).values
    stored = np.asarray(m.thresholds, np.float32)
    assert np.array_equal(stored, expected)
    assert np.array_equal(outs["labels"], outs["probabilities"] >= stored)  # the labels output uses them
    info = m.metadata["int8"]
    assert info["thresholds_refit"]["after"] == [float(v) for v in stored]
    assert m.metadata["calibration"]["objective"] == "f1"


@pytest.mark.parametrize("case", [
    "features", "untrained", "fp16", "cpu", "no-calibration", "calibration-alone", "labels", "missing", "bake",
])
def test_refused_before_any_model_runs(benign, case, tmp_path, no_model_runs, capsys):
    setup = benign
    out = tmp_path / "int8.onnx"
    model, calib = setup["model"], setup["train"]
    extra: list[str] = []
    if case == "features":
        calib = tmp_path / "feats"
        calib.mkdir()
        (calib / "manifest.json").write_text("{}")
    elif case == "untrained":
        model = setup["untrained"]
    elif case == "labels":
        x, y = _npz(calib)
        calib = tmp_path / "three.npz"
        np.savez(calib, x=x, y=y[:, :3])
    elif case == "missing":
        calib = tmp_path / "nope.csv"
    extra = {"fp16": ["--fp16"], "cpu": ["--target", "cpu"], "bake": ["--bake-preprocess"]}.get(case, [])
    argv = ["export", model, "--int8", "--calibration", calib, *extra, "-o", out]
    if case == "no-calibration":
        argv = ["export", model, "--int8", "-o", out]
    elif case == "calibration-alone":
        argv = ["export", model, "--calibration", calib, "-o", out]
    rc, stdout, err = _cli(capsys, *argv)
    expected = {
        "features": f"{calib}: --calibration: a features folder holds backbone outputs, not model inputs: it cannot "
                    "calibrate or measure an int8 backbone (give the CSV or NPZ the features were extracted from)",
        "untrained": f"{model}: the model has an untrained head (no graphfix.training): int8 accuracy is measured on "
                     "the trained multi-label head (run `graphfix swap-head` and `graphfix train-head MODEL --train "
                     "DATA` first)",
        "fp16": "--int8 cannot be combined with --fp16 (layers left unquantized run fp16 when the TensorRT engine "
                "enables fp16 (trtexec --fp16))",
        "cpu": "--int8 is for --target tensorrt, not cpu (the Q/DQ placement is TensorRT's; onnxruntime runs the "
               "file too)",
        "no-calibration": "--int8 needs --calibration DATA (the rows that set the int8 ranges)",
        "calibration-alone": "--calibration needs --int8",
        "labels": f"{calib}: the data set has 3 labels but the model has 4 (the label columns must match the model's "
                  "graphfix.labels)",
        "missing": f"{calib}: --calibration: no such data set file or features folder",
        "bake": "--int8 cannot be combined with --bake-preprocess (calibration rows are preprocessed float inputs, "
                "not uint8 images)",
    }[case]
    assert (rc, stdout, no_model_runs) == (2, "", [])
    assert err.splitlines()[0] == f"graphfix: error: {expected}"
    assert not out.exists()


def test_matmul_and_gemm_weights_are_per_output_channel(tmp_path):
    """MatMul weights [K, N] get axis 1, Gemm (transB=1) weights [N, K] axis 0: one scale per output."""
    from graphfix.convert.export.int8 import export_int8
    from graphfix.data.datasets import Dataset

    rng = np.random.default_rng(0)
    nodes = [
        oh.make_node("Flatten", ["data"], ["flat"], name="flat"),
        oh.make_node("MatMul", ["flat", "mm.w"], ["m1"], name="mm"),
        oh.make_node("Relu", ["m1"], ["r1"], name="relu1"),
        oh.make_node("Gemm", ["r1", "fc.w", "fc.b"], ["g1"], name="fc", transB=1),
        oh.make_node("Relu", ["g1"], ["features"], name="relu2"),
        oh.make_node("Gemm", ["features", "graphfix_head.weight", "graphfix_head.bias"], ["logits"],
                     name="graphfix_head", transB=1),
        oh.make_node("Sigmoid", ["logits"], ["probabilities"], name="graphfix_sigmoid"),
    ]
    inits = [onnx.numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("mm.w", rng.standard_normal((48, 24))), ("fc.w", rng.standard_normal((16, 24))), ("fc.b", np.zeros(16)),
        ("graphfix_head.weight", rng.standard_normal((4, 16))), ("graphfix_head.bias", np.zeros(4)))]
    graph = oh.make_graph(nodes, "mm", [oh.make_tensor_value_info("data", onnx.TensorProto.FLOAT, ["N", 3, 4, 4])],
                          [oh.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", 4])], inits)
    proto = make_model(graph)
    oh.set_model_props(proto, {"graphfix.labels": json.dumps(LABELS), "graphfix.training": json.dumps({"loss": "bce"})})
    x = rng.standard_normal((40, 3, 4, 4)).astype(np.float32)
    y = rng.integers(0, 2, (40, 4)).astype(np.uint8)
    out = tmp_path / "mm.onnx"
    export_int8(Model.from_proto(proto), out, calibration=Dataset.from_arrays(x, y, LABELS), budget=1.0, check=False)
    g = _qdq(str(out))
    for node, shape, axis in (("mm", (48, 24), 1), ("fc", (16, 24), 0)):
        dq = g["producers"][g["nodes"][node].input[1]]
        w, scale, zp = (g["inits"][i] for i in dq.input)
        assert dq.op_type == "DequantizeLinear" and w.dtype == np.int8 and w.shape == shape
        assert {a.name: a.i for a in dq.attribute}["axis"] == axis and scale.shape == (shape[axis],) and not zp.any()
    assert g["inits"]["graphfix_head.weight"].dtype == np.float32
