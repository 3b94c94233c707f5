"""Issue 22, items 2, 6, 9 and 10: predict on every input kind, explicit head state, what train-head and
inspect say, exit codes and noise. Each test runs the real command and checks the exact text it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from graphfix.data.shards import read_arrays
from graphfix.model import head_state, load_onnx, read_metadata
from tests.conftest import ROOT, onnx_fixture, run_cli
from tests.tiny_heads import build_swapped, make_data

LENET = ROOT / "fixtures" / "mxnet" / "lenet" / "lenet-symbol.json"


def _ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    return res


def _warnings(res: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.startswith("graphfix: warning:")]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """A swapped (untrained) model, the same trained and calibrated, 12 PNGs and a CSV manifest of them."""
    from PIL import Image

    d = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHFIX_CACHE", str(d / "cache"))
        model = build_swapped()
        model.save(d / "swapped.onnx")
        x, y = make_data(model, 200)
        y[:, 3] = 0  # c3: no training positives
        y[:, 2] = 0
        y[:2, 2] = 1  # c2: two
        np.savez(d / "train.npz", x=x[:150], y=y[:150])
        np.savez(d / "val.npz", x=x[150:], y=y[150:])
        rng = np.random.default_rng(0)
        (d / "img").mkdir()
        rows = ["path,labels"]
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(d / "img" / f"{i:02d}.png")
            rows.append(f"img/{i:02d}.png,c{i % 4}")
        (d / "test.csv").write_text("\n".join(rows) + "\n")
        _ok(run_cli("train-head", d / "swapped.onnx", "--train", d / "train.npz", "--val", d / "val.npz",
                    "-o", d / "trained.onnx", "-q"))
        _ok(run_cli("calibrate", d / "trained.onnx", "--heldout", d / "val.npz", "-o", d / "calibrated.onnx", "-q"))
        yield d


# ----- item 2: predict takes a CSV manifest with and without -o ----------------------------------------------
def test_predict_csv_without_output_prints_each_row(pipe):
    d = pipe
    res = _ok(run_cli("predict", d / "calibrated.onnx", d / "test.csv"))
    lines = res.stdout.splitlines()
    assert [ln.split(": ")[0] for ln in lines] == [str(d / "img" / f"{i:02d}.png") for i in range(12)]
    assert res.stderr == ""  # calibrated: no warning
    # the same rows as the image files themselves, and as the -o predictions folder
    by_csv = json.loads(_ok(run_cli("predict", d / "calibrated.onnx", d / "test.csv", "--json")).stdout)
    images = [str(d / "img" / f"{i:02d}.png") for i in range(12)]
    by_files = json.loads(_ok(run_cli("predict", d / "calibrated.onnx", *images, "--json")).stdout)
    assert [p["labels"] for p in by_csv["predictions"]] == [p["labels"] for p in by_files["predictions"]]
    assert [p["scores"] for p in by_csv["predictions"]] == [p["scores"] for p in by_files["predictions"]]
    _ok(run_cli("predict", d / "calibrated.onnx", d / "test.csv", "-o", d / "preds", "--scores", "-q"))
    arrays = read_arrays(d / "preds", ["labels", "scores"])
    labels = load_onnx(d / "calibrated.onnx").labels
    assert [[labels[j] for j in np.flatnonzero(row)] for row in arrays["labels"]] == \
        [p["labels"] for p in by_csv["predictions"]]
    np.testing.assert_allclose(arrays["scores"], [[p["scores"][n] for n in labels] for p in by_csv["predictions"]],
                               atol=1e-6)


def test_predict_mixes_csv_npz_and_images_in_the_order_given(pipe):
    d = pipe
    res = _ok(run_cli("predict", d / "calibrated.onnx", d / "img" / "03.png", d / "val.npz", d / "test.csv", "--json"))
    names = [p["input"] for p in json.loads(res.stdout)["predictions"]]
    assert names[0] == str(d / "img" / "03.png")
    assert names[1:51] == [f"{d / 'val.npz'}[{i}]" for i in range(50)]
    assert names[51:] == [str(d / "img" / f"{i:02d}.png") for i in range(12)]


# ----- item 6: the head state is explicit --------------------------------------------------------------------
def test_head_state_and_cheap_metadata_reader(pipe, tmp_path):
    d = pipe
    for name, state in (("swapped", "untrained"), ("trained", "trained"), ("calibrated", "calibrated")):
        meta = read_metadata(d / f"{name}.onnx")
        assert meta == load_onnx(d / f"{name}.onnx").metadata
        assert head_state(meta) == head_state(load_onnx(d / f"{name}.onnx")) == state
    assert head_state(read_metadata(onnx_fixture("cnn_softmax"))) is None
    (tmp_path / "junk.onnx").write_bytes(b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert read_metadata(tmp_path / "junk.onnx") == {} and read_metadata(tmp_path / "none.onnx") == {}


def test_calibrate_refuses_an_untrained_head(pipe, tmp_path):
    d = pipe
    out = tmp_path / "cal.onnx"
    res = run_cli("calibrate", d / "swapped.onnx", "--heldout", d / "val.npz", "-o", out)
    assert res.returncode == 2 and not out.exists()
    assert res.stderr.splitlines() == [
        f"graphfix: error: {d / 'swapped.onnx'}: the head is untrained (no graphfix.training: random weights from "
        "swap-head); thresholds fitted on it mean nothing (run `graphfix train-head MODEL --train DATA` first, "
        "or pass --untrained to calibrate it anyway)"]
    _ok(run_cli("calibrate", d / "swapped.onnx", "--heldout", d / "val.npz", "--untrained", "-o", out, "-q"))
    assert head_state(read_metadata(out)) == "untrained"  # thresholds do not make it trained


UNTRAINED = ("the head is untrained (swap-head's random weights, no graphfix.training): its labels mean nothing; "
             "run `graphfix train-head` first")
UNCALIBRATED = "the head is not calibrated (no thresholds stored): labels use 0.5; run `graphfix calibrate`"


@pytest.mark.parametrize(("name", "state", "warning"), [
    ("swapped", "untrained", UNTRAINED), ("trained", "trained", UNCALIBRATED), ("calibrated", "calibrated", None)])
def test_export_check_predict_say_the_state_once(pipe, tmp_path, name, state, warning):
    d = pipe
    model = d / f"{name}.onnx"
    expected = [f"graphfix: warning: {model}: {warning}"] if warning else []
    out = tmp_path / "e.onnx"
    runs = {
        "export": run_cli("export", model, "--target", "cpu", "-o", out, "--json"),
        "check": run_cli("check", model, "--target", "cuda", "--json"),
        "predict": run_cli("predict", model, d / "img" / "00.png", "--json"),
    }
    for command, res in runs.items():
        _ok(res)
        assert _warnings(res) == expected, (command, res.stderr)
        assert json.loads(res.stdout)["head_state"] == state, command
    assert head_state(read_metadata(out)) == state  # export keeps the state
    res = _ok(run_cli("predict", model, d / "img" / "00.png", "-q"))
    assert res.stderr == ""  # -q: errors only
    res = run_cli("predict", model, d / "img" / "gone.png")
    assert res.returncode == 2 and res.stderr.splitlines() == [f"graphfix: error: {d / 'img' / 'gone.png'}: image not found"]
    no_head = _ok(run_cli("check", onnx_fixture("cnn_softmax"), "--target", "cuda", "--json"))
    assert json.loads(no_head.stdout)["head_state"] is None and not _warnings(no_head)


def test_swap_head_on_a_calibrated_model_drops_its_state(pipe, tmp_path):
    d = pipe
    out = tmp_path / "again.onnx"
    res = _ok(run_cli("swap-head", d / "calibrated.onnx", "--labels", "3", "-o", out))
    assert res.stdout.splitlines()[1] == ("dropped the old head's graphfix.training, graphfix.calibration, "
                                          "graphfix.thresholds metadata: the new head is untrained (run `graphfix train-head`)")
    meta = read_metadata(out)
    assert not {"training", "calibration", "thresholds"} & set(meta)
    assert meta["head"]["dropped_state"] == ["training", "calibration", "thresholds"]
    assert head_state(meta) == "untrained" and load_onnx(out).output_names == ["logits", "probabilities"]
    res = _ok(run_cli("swap-head", d / "swapped.onnx", "--labels", "3", "-o", tmp_path / "fresh.onnx"))
    assert len(res.stdout.splitlines()) == 1 and read_metadata(tmp_path / "fresh.onnx")["head"]["dropped_state"] == []


# ----- item 9: what train-head and inspect say ----------------------------------------------------------------
def test_train_head_says_lambda_c_validation_map_and_few_positives(pipe, tmp_path):
    d = pipe
    res = _ok(run_cli("train-head", d / "swapped.onnx", "--train", d / "train.npz", "--val", d / "val.npz",
                      "-o", tmp_path / "t.onnx"))
    doc = json.loads(_ok(run_cli("train-head", d / "swapped.onnx", "--train", d / "train.npz", "--val",
                                 d / "val.npz", "-o", tmp_path / "t2.onnx", "--json")).stdout)
    s = doc["history"]["settings"]
    lam = s["weight_decay"]
    assert s["C"] == pytest.approx(1 / (lam * 150)) and s["selected_by"] == "validation mAP"
    lines = res.stdout.splitlines()
    assert s["loss_requested"] == "auto" and s["loss"] in ("bce", "asl", "softmax", "squared")
    name = s["loss"] + ("-balanced" if s["pos_weight"] else "")
    assert lines[0] == f"trained head: loss {name} (auto), 150 training rows, 50 validation rows"
    assert lines[1] == (f"regularisation: lambda {lam:.4g}, C = 1/(lambda*N) = {1 / (lam * 150):.4g} (sklearn's C on "
                        f"standardised features, N = 150); chosen by validation set mAP {s['selection_score']:.4f} "
                        f"(best of {len(doc['history']['cv'])} values)")
    # --standardize auto: the squared loss's score under each scale, and the scale kept
    sc = s["scale_choice"]["scales"]
    assert s["standardize_requested"] == "auto" and s["standardize"] == s["scale_choice"]["chosen"]
    assert lines[2] == (f"features scaled {s['standardize']} (auto: the squared loss's best score under each: "
                        f"per-feature {sc['per-feature']['score']:.4f} +- {sc['per-feature']['spread']:.4f}, "
                        f"global {sc['global']['score']:.4f} +- {sc['global']['spread']:.4f}; "
                        "global only when higher by more than one standard error)")
    assert lines[3].startswith(f"solver: {s['iterations']} L-BFGS iterations, max |gradient| ")
    assert lines[4] == f"validation set mAP {s['val_mAP']:.4f}" and lines[-1] == f"wrote {tmp_path / 't.onnx'}"
    # the losses --loss auto compared, each at its best lambda, the kept one marked
    assert lines[5] == "losses compared (validation set mAP, each at its best lambda):"
    rows = {r["loss"]: r for r in s["losses"]}
    assert [ln.split()[0] for ln in lines[6:11]] == list(rows) == ["bce", "bce-balanced", "asl", "softmax", "squared"]
    for ln in lines[6:11]:
        r = rows[ln.split()[0]]
        assert ln == (f"  {r['loss']:<13} lambda {r['weight_decay']:<9.4g} {r['score']:.4f}"
                      + ("  <- chosen" if r["chosen"] else ""))
    assert rows[name]["chosen"] and rows[name]["score"] == max(r["score"] for r in rows.values())
    assert _warnings(res) == [
        "graphfix: warning: 1 label has no training positives (the head only learns 'absent'): c3",
        "graphfix: warning: 1 label has fewer than 3 training positives (unreliable scores): c2 (2)"]
    assert s["few_positives"] == {"c2": 2, "c3": 0}
    cv = _ok(run_cli("train-head", d / "swapped.onnx", "--train", d / "train.npz", "-o", tmp_path / "t3.onnx", "-q"))
    assert cv.stdout == "" and cv.stderr == ""
    s3 = load_onnx(tmp_path / "t3.onnx").metadata["training"]
    assert s3["selected_by"] == "3-fold CV mAP" and s3["selection_score"] > 0.5


@pytest.mark.torch
def test_train_from_prints_epochs_and_says_validation_set(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "cache"))
    swapped = tmp_path / "s.onnx"
    _ok(run_cli("swap-head", onnx_fixture("mlp_matmul_add"), "--labels", "3", "-o", swapped, "-q"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 3, 32, 32)).astype(np.float32)
    y = (x[:, :3].mean(axis=(2, 3)) > 0).astype(np.uint8)
    np.savez(tmp_path / "train.npz", x=x[:80], y=y[:80])
    np.savez(tmp_path / "val.npz", x=x[80:], y=y[80:])
    res = _ok(run_cli("train-head", swapped, "--train", tmp_path / "train.npz", "--val", tmp_path / "val.npz",
                      "--train-from", "relu2", "--epochs", "3", "-o", tmp_path / "t.onnx"))
    s = load_onnx(tmp_path / "t.onnx").metadata["training"]
    curve = s["epoch_val_mAP"]
    assert len(curve) == 4 and s["val_source"] == "validation set" and s["selected_by"] == "validation mAP"
    lines = res.stdout.splitlines()
    assert "chosen by validation set mAP" in lines[1] and "CV" not in res.stdout
    # fine-tuning: --standardize auto means per-feature (what its defaults were measured with)
    assert s["standardize"] == "per-feature" and s["standardize_requested"] == "auto" and "features scaled" not in res.stdout
    assert lines[3] == "fine-tuning from relu2 for 3 epochs; mAP on the validation set by epoch (0 = head only):"
    assert lines[4] == "  " + ", ".join(f"{i}: {v:.4f}" for i, v in enumerate(curve))
    assert lines[5] == f"kept epoch {s['best_epoch']} (mAP {curve[s['best_epoch']]:.4f})"
    assert curve[s["best_epoch"]] == max(curve)


def test_head_progress_bar_has_a_total(capsys):
    from graphfix.data import Dataset
    from graphfix.train import train_head

    model = build_swapped()
    x, y = make_data(model, 60)
    train_head(model, Dataset.from_arrays(x, y, model.labels), progress=True, cache=False)
    err = capsys.readouterr().err
    # 2 scales x the squared loss's path + 5 losses, each 17 weight decays x 3 folds, + the final solve (paths may stop early)
    assert "head: 0/358 solves" in err
    assert "solve" in err and "205solve" not in err


def test_inspect_shows_a_graphfix_models_state(pipe):
    d = pipe
    res = _ok(run_cli("inspect", d / "calibrated.onnx"))
    lines = res.stdout.splitlines()
    meta = load_onnx(d / "calibrated.onnx").metadata
    s, th = meta["training"], meta["thresholds"]
    assert "  head state: calibrated" in lines and "  labels (4): c0, c1, c2, c3" in lines
    assert "  preprocessing: none stored" in lines or any(ln.startswith("  preprocessing: ") for ln in lines)
    assert (f"  training: loss {s['loss']}{'-balanced' if s['pos_weight'] else ''} (auto), 150 rows, lambda {s['weight_decay']:.4g} (C {s['C']:.4g}) chosen by validation set "
            f"mAP {s['selection_score']:.4f}, {s['iterations']} iterations, validation mAP {s['val_mAP']:.4f}, "
            "2 labels with < 3 positives") in lines
    assert "  thresholds (f1): " + ", ".join(f"c{j} {t:.4g}" for j, t in enumerate(th)) in lines
    assert any(ln.startswith("  --features candidates, best first: features [N,8], gap [N,8,1,1]") for ln in lines)
    doc = json.loads(_ok(run_cli("inspect", d / "calibrated.onnx", "--json")).stdout)
    assert doc["head_state"] == "calibrated" and doc["feature_candidates"][0] == {"name": "features", "shape": ["N", 8]}


def test_inspect_lists_train_from_candidates_that_train_head_accepts(tmp_path):
    from graphfix.errors import GraphfixError
    from graphfix.train.finetune import segment_nodes

    swapped = tmp_path / "s.onnx"
    _ok(run_cli("swap-head", onnx_fixture("cnn_softmax"), "--labels", "3", "-o", swapped, "-q"))
    res = _ok(run_cli("inspect", swapped, "--train-from"))
    lines = res.stdout.splitlines()
    start = lines.index("  --train-from candidates, nearest the head first:")
    listed = [ln.split(":")[0].strip() for ln in lines[start + 1:]]
    assert listed == ["conv2", "pool1", "relu1", "bn1", "conv1"]
    assert lines[start + 1] == ("    conv2: 5 nodes, 2 trained initializers (bn2.bias, bn2.scale), 32 parameters, "
                                "activation 4.0 KB per image")
    assert lines[start + 2].endswith("2,352 parameters, activation 4.0 KB per image; = --train-from -1")
    model = load_onnx(swapped)
    for tensor in listed:
        assert segment_nodes(model, tensor)
    doc = json.loads(_ok(run_cli("inspect", swapped, "--train-from", "--json")).stdout)
    assert [c["tensor"] for c in doc["train_from_candidates"]] == listed
    with pytest.raises(GraphfixError):  # the graph input is not a cut tensor
        segment_nodes(model, "data")
    res = run_cli("inspect", onnx_fixture("cnn_softmax"), "--train-from")
    assert res.returncode == 2 and res.stderr.splitlines() == [
        f"graphfix: error: {onnx_fixture('cnn_softmax')}: --train-from: the model has no graphfix head "
        "(run `graphfix swap-head` first)"]


# ----- item 10: exit codes and noise -------------------------------------------------------------------------
def test_missing_input_shape_with_target_is_a_usage_error(tmp_path):
    out = tmp_path / "x.onnx"
    res = run_cli("swap-head", LENET, "--labels", "3", "--target", "tensorrt", "-o", out)
    assert res.returncode == 2 and not out.exists()
    assert res.stderr.splitlines() == [
        f"graphfix: error: {LENET}: input data has a dynamic dimension 2 (None); only the batch may be dynamic "
        "(fix it when loading: --input-shape data:1,3,224,224)"]
    _ok(run_cli("convert", LENET, "-o", tmp_path / "l.onnx", "-q"))
    load_onnx(tmp_path / "l.onnx").with_metadata(preprocess={"size": [28, 28]}).save(tmp_path / "p.onnx")
    res = run_cli("export", tmp_path / "p.onnx", "--target", "cpu", "--bake-preprocess", "-o", out)
    assert res.returncode == 2 and "has a symbolic C, H or W" in res.stderr and not out.exists()


@pytest.mark.parametrize(("args", "flag"), [
    (["predict", "M", "IMG", "--batch-size", "0"], "--batch-size"),  # was a traceback (range step 0), exit 1
    (["predict", "M", "IMG", "--workers", "-2"], "--workers"),
    (["train-head", "M", "--train", "IMG", "--decision", "topk", "--top-k", "0"], "--top-k"),
    (["calibrate", "M", "--heldout", "IMG", "--min-positives", "0"], "--min-positives"),
    (["check", "M", "--max-batch", "0"], "--max-batch"),
    (["convert", "DIR", "-o", "OUT", "--jobs", "0"], "--jobs/-j"),
    (["convert", "DIR", "-o", "OUT", "--timeout", "0"], "--timeout"),
])
def test_a_count_below_one_is_a_usage_error(pipe, tmp_path, args, flag):
    d = pipe
    where = {"M": d / "calibrated.onnx", "IMG": d / "img" / "00.png", "DIR": d / "img", "OUT": tmp_path / "out"}
    res = run_cli(*[where.get(a, a) for a in args])
    kind = "number" if flag == "--timeout" else "integer"
    assert res.returncode == 2 and res.stderr.splitlines() == [
        f"graphfix: error: argument {flag}: must be a positive {kind}, not {args[-1]!r} "
        f"(see `graphfix {args[0]} --help`)"]


def test_convert_a_folder_with_no_models_is_an_error(tmp_path):
    (tmp_path / "models" / "sub").mkdir(parents=True)
    (tmp_path / "models" / "sub" / "net.onnx").write_bytes(onnx_fixture("cnn_softmax").read_bytes())
    (tmp_path / "empty").mkdir()
    res = run_cli("convert", tmp_path / "models", "-o", tmp_path / "out")
    assert res.returncode == 2 and not (tmp_path / "out").exists()
    assert res.stderr.splitlines() == [
        f"graphfix: error: {tmp_path / 'models'}: no models found (1 model is in subfolders: add -r (--recursive))"]
    res = run_cli("convert", tmp_path / "empty", "-o", tmp_path / "out", "--json")
    assert res.returncode == 2 and json.loads(res.stdout)["error"]["kind"] == "usage"
    assert res.stderr.splitlines() == [
        f"graphfix: error: {tmp_path / 'empty'}: no models found (looked for *-symbol.json with its .params, "
        "*.prototxt beside a .caffemodel, and *.onnx; add -r (--recursive) to look into subfolders)"]
    _ok(run_cli("convert", tmp_path / "models", "-o", tmp_path / "out", "-r", "-q"))
    assert (tmp_path / "out" / "sub" / "net.onnx").is_file()


def test_a_closed_pipe_on_stdout_ends_quietly(pipe):
    """`graphfix predict ... | head -1`, made certain: the reader is gone before the first write."""
    d = pipe
    env = dict(os.environ, PYTHONPATH=str(ROOT), GRAPHFIX_CACHE=str(d / "cache"))
    for args in (["predict", d / "calibrated.onnx", d / "test.csv", d / "val.npz"], ["inspect", d / "calibrated.onnx"]):
        read, write = os.pipe()
        os.close(read)
        try:
            proc = subprocess.run([sys.executable, "-m", "graphfix.cli", *map(str, args)], stdout=write,
                                  stderr=subprocess.PIPE, text=True, env=env, timeout=300)
        finally:
            os.close(write)
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.stderr)
    shell = f'"{sys.executable}" -m graphfix.cli predict "{d / "calibrated.onnx"}" "{d / "val.npz"}" | head -1'
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith(f"{d / 'val.npz'}[0]: ") and proc.stderr == ""


@pytest.mark.slow
def test_ray_log_noise_stays_off_the_terminal(pipe, tmp_path):
    pytest.importorskip("ray")
    d = pipe
    env = dict(os.environ, PYTHONPATH=str(ROOT), GRAPHFIX_CACHE=str(d / "cache"))
    env.pop("RAY_BACKEND_LOG_LEVEL", None)
    env.pop("GRAPHFIX_VERBOSE", None)
    runs = {}
    for flag in ("", "-v"):
        args = ["predict", d / "calibrated.onnx", d / "val.npz", "-o", tmp_path / f"p{flag}", "--ray", *([flag] if flag else [])]
        runs[flag] = _ok(subprocess.run([sys.executable, "-m", "graphfix.cli", *map(str, args)], capture_output=True,
                                        text=True, env=env, timeout=600))
    assert runs[""].stderr == "", runs[""].stderr
    assert runs[""].stdout.splitlines()[1] == f"wrote {tmp_path / 'p'}"
    assert "core_worker" in runs["-v"].stderr or "Token authentication" in runs["-v"].stderr, runs["-v"].stderr
