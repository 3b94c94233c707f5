"""The graphfix command end to end: --json documents, exit codes, one-line errors, no partial files."""

from __future__ import annotations

import json

import onnx
import pytest

from tests.conftest import onnx_fixture, run_cli


def test_swap_head_default_output_and_json(tmp_path):
    src = tmp_path / "net.onnx"
    src.write_bytes(onnx_fixture("cnn_softmax").read_bytes())
    res = run_cli("swap-head", src, "--labels", "20", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    out = tmp_path / "net-multilabel.onnx"
    assert doc["ok"] and doc["output"] == str(out) and len(doc["labels"]) == 20
    assert doc["head"]["num_features"] == 16
    onnx.checker.check_model(str(out), full_check=True)


def test_swap_head_label_file_and_quiet(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\n# comment\nbird\n")
    out = tmp_path / "o.onnx"
    res = run_cli("swap-head", onnx_fixture("squeezenet_conv_head"), "--labels", labels, "-o", out, "-q")
    assert res.returncode == 0 and res.stdout == "" and res.stderr == ""
    import graphfix as gf

    assert gf.load(out).labels == ["cat", "dog", "bird"]


def test_inspect_json():
    res = run_cli("inspect", onnx_fixture("mlp_matmul_add"), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["head"]["kind"] == "matmul_add" and doc["ops"]["MatMul"] == 2
    assert doc["inputs"][0]["shape"] == ["batch", 3, 32, 32]


def test_inspect_reports_missing_head_without_failing():
    res = run_cli("inspect", onnx_fixture("two_softmax"), "--json")
    assert res.returncode == 0
    assert "ambiguous" in json.loads(res.stdout)["head_error"]


def test_convert_onnx_cleans(tmp_path):
    out = tmp_path / "c.onnx"
    res = run_cli("convert", onnx_fixture("cnn_logsoftmax_op11"), "-o", out, "--json")
    assert res.returncode == 0, res.stderr
    proto = onnx.load(str(out))
    assert proto.ir_version == 8 and proto.opset_import[0].version == 11
    assert all(n.name for n in proto.graph.node)
    assert json.loads(res.stdout)["nodes"] == len(proto.graph.node)


def _bad(tmp_path, name: str, content: bytes | str | None):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


BAD_MODELS = {
    "missing": None,
    "empty": b"",
    "truncated": "TRUNCATE",
    "text": "this is not a model, just text\n" * 10,
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_files(tmp_path, case):
    content = BAD_MODELS[case]
    if content == "TRUNCATE":
        content = onnx_fixture("cnn_softmax").read_bytes()[:700]
    src = _bad(tmp_path, "model.onnx", content)
    out = tmp_path / "out.onnx"
    res = run_cli("swap-head", src, "--labels", "20", "-o", out)
    _assert_one_line_error(res, str(src))
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None else ["model.onnx"])


@pytest.mark.parametrize(
    ("labels", "needle"),
    [("0", "positive"), ("-3", "positive"), ("abc", "neither a positive count"), ("EMPTYFILE", "no label names"), ("DUPFILE", "duplicate")],
)
def test_bad_labels(tmp_path, labels, needle):
    if labels == "EMPTYFILE":
        labels = str(_bad(tmp_path, "labels.txt", "\n\n"))
    elif labels == "DUPFILE":
        labels = str(_bad(tmp_path, "labels.txt", "cat\ndog\ncat\n"))
    out = tmp_path / "out.onnx"
    res = run_cli("swap-head", onnx_fixture("cnn_softmax"), "--labels", labels, "-o", out)
    _assert_one_line_error(res, needle)
    if "FILE" not in labels and labels.endswith(".txt"):
        assert labels in res.stderr
    assert not out.exists()


@pytest.mark.parametrize(("fixture", "needle"), [("no_head", "no classification head"), ("two_softmax", "ambiguous head")])
def test_headless_and_ambiguous_models(tmp_path, fixture, needle):
    out = tmp_path / "out.onnx"
    res = run_cli("swap-head", onnx_fixture(fixture), "--labels", "20", "-o", out)
    _assert_one_line_error(res, needle)
    assert str(onnx_fixture(fixture)) in res.stderr
    assert not out.exists()


def test_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(onnx_fixture("cnn_softmax").read_bytes())
    res = run_cli("convert", src, "-o", src)
    _assert_one_line_error(res, "overwrite")


def test_usage_error_is_one_line():
    res = run_cli("swap-head")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1


def test_json_error_document(tmp_path):
    res = run_cli("swap-head", onnx_fixture("no_head"), "--labels", "3", "-o", tmp_path / "x.onnx", "--json")
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["error"]["kind"] == "no_head"


def _assert_one_line_error(res, needle: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("graphfix: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in res.stderr


def test_swap_head_with_target_exports_a_ready_model(tmp_path):
    out = tmp_path / "trt.onnx"
    res = run_cli("swap-head", onnx_fixture("squeezenet_conv_head"), "--labels", "4", "-o", out, "--target", "tensorrt", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["export"]["ready"] is True and doc["export"]["parity"]["ok"] is True
    proto = onnx.load(str(out))
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}  # folded by export
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    check = run_cli("check", out, "--target", "tensorrt", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["ok"] is True


def test_convert_with_target_and_fp16_needs_target(tmp_path):
    res = run_cli("convert", onnx_fixture("cnn_softmax"), "-o", tmp_path / "c.onnx", "--target", "cuda", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["export"]["target"] == "cuda"
    res = run_cli("convert", onnx_fixture("cnn_softmax"), "-o", tmp_path / "d.onnx", "--fp16")
    _assert_one_line_error(res, "--fp16 needs --target")
