"""The CI subset of the torchvision/timm zoo (tests/zoo/, made by benchmarks/zoo/generate.py --ci):
swap-head -> export --target tensorrt -> check, through the CLI, for both torch exporters.

Also: the swapped model's backbone features are bit-identical to the source's at onnxruntime's
ORT_ENABLE_ALL and ORT_DISABLE_ALL, and `check --build` builds a TensorRT-RTX engine where
tensorrt_rtx is installed. The whole zoo runs with `benchmarks/zoo/run.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import graphfix as gf
from graphfix.cli import main

ZOO = Path(__file__).parent / "zoo"
MODELS = sorted(p.name for p in ZOO.glob("*.onnx"))
#: The head kind each CI model must be found with (no --features needed), per exporter: MaxViT's
#: bias-free Linear is a bare MatMul from TorchScript and a Gemm without C from dynamo.
KINDS = {"vit_tiny": "gemm", "maxvit_tiny.ts17": "matmul", "maxvit_tiny.dyn18": "gemm",
         "convnext_small_cfg": "gemm", "deit_distilled_mini": "distilled"}


def test_ci_subset_is_present():
    names = {m.split(".")[0] for m in MODELS}
    assert names == {k.split(".")[0] for k in KINDS} and len(MODELS) == 8, MODELS


@pytest.mark.parametrize("name", MODELS)
def test_swap_export_check(name, tmp_path, capsys):
    src = ZOO / name
    swapped, exported = tmp_path / "ml.onnx", tmp_path / "trt.onnx"
    assert main(["swap-head", str(src), "--labels", "5", "-o", str(swapped), "-q"]) == 0
    stem = name.rsplit(".", 1)[0]
    assert gf.find_head(gf.load(str(src))).kind == KINDS.get(stem, KINDS.get(stem.split(".")[0]))
    capsys.readouterr()
    rc = main(["export", str(swapped), "--target", "tensorrt", "-o", str(exported), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0, doc
    assert doc["parity"]["ok"], doc["parity"]
    assert main(["check", str(exported), "--target", "tensorrt", "-q"]) == 0


def _with_output(proto: onnx.ModelProto, names: list[str]) -> bytes:
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    del proto.graph.output[:]
    for name in names:
        proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return proto.SerializeToString()


def _run(model_bytes: bytes, feeds, level) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL],
                         ids=["enable_all", "disable_all"])
@pytest.mark.parametrize("name", MODELS)
def test_backbone_bit_identical(name, level, tmp_path):
    source = gf.load(str(ZOO / name))
    head = gf.find_head(source)
    swapped = gf.swap_head(source, labels=5)
    swapped.save(tmp_path / "ml.onnx")
    parts = head.parts or [head.features]
    shape = [d if isinstance(d, int) else 2 for d in source.ir.graph.inputs[0].shape]
    feeds = {"data": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    want = _run(_with_output(onnx.load(str(ZOO / name)), parts), feeds, level)
    got = _run(_with_output(onnx.load(str(tmp_path / "ml.onnx")), parts), feeds, level)
    for part, a, b in zip(parts, want, got):
        assert np.array_equal(a, b), f"{name} {part}: max abs diff {np.max(np.abs(a - b)):.3g}"


@pytest.mark.parametrize("name", MODELS)
def test_engine_builds(name, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    swapped = gf.swap_head(gf.load(str(ZOO / name)), labels=5)
    result = gf.export(swapped, tmp_path / "trt.onnx", target="tensorrt", max_batch=4)
    report = gf.check(result.path, target="tensorrt", build=True)
    assert report.ok and report.build["status"] == "ok", report.text()


@pytest.mark.parametrize("name", MODELS)
def test_fp16_export_plain_or_auto(name, tmp_path):
    """Every CI zoo model exports with `--fp16`, or, refused on parity, with `--fp16 auto` as the
    refusal's hint says; never a crash (each export is a child process: the dynamo ViT's fp16
    graph used to kill onnxruntime's session with SIGSEGV). The written graph type-checks."""
    from tests.conftest import run_cli

    swapped, exported = tmp_path / "ml.onnx", tmp_path / "fp16.onnx"
    assert main(["swap-head", str(ZOO / name), "--labels", "5", "-o", str(swapped), "-q"]) == 0
    args = ["export", str(swapped), "--target", "tensorrt", "-o", str(exported), "--json"]
    proc = run_cli(*args, "--fp16")
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}: {proc.stderr[-300:]}"
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and "parity failed" in lines[0], proc.stderr
        assert "--fp16 auto" in lines[0] and not exported.exists()
        proc = run_cli(*args, "--fp16", "auto")
        assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["parity"]["ok"] and doc["notes"]["fp16_converted_nodes"] > 0, doc
    proto = onnx.load(str(exported))
    assert TensorProto.FLOAT16 in {i.data_type for i in proto.graph.initializer}
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
