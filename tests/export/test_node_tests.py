"""ONNX's backend node tests through `graphfix export`, per target, and the fixes they led to.

A sample of onnx's node tests (`onnx.backend.test.loader.load_model_tests(kind="node")`, built
from the onnx wheel) goes through the CLI for cpu, cuda and tensorrt (fp16 on a smaller sample)
with benchmarks/onnx_node_tests.py (the whole set: run that script). Every case comes out
computing onnxruntime's outputs of the original on the stored inputs, or refused in exactly one
stderr line: never silently wrong, never a traceback, a crash or log lines beside the error.
The sample holds every case issue 23 names and common ops of each family.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from graphfix.convert.export import _parity
from graphfix.convert.export import passes as P
from graphfix.errors import GraphfixError
from graphfix.model import Model

ROOT = Path(__file__).resolve().parents[2]

#: Each case issue 23 names (or one of its family), then common ops of each family.
SAMPLE = [
    "test_gather_0", "test_gather_elements_0", "test_identity_sequence", "test_split_1d_uneven_split_opset18",
    "test_split_to_sequence_1", "test_gridsample", "test_gridsample_volumetric_bilinear_align_corners_0",
    "test_clip_default_int8_inbounds", "test_triu_one_row", "test_tril_zero", "test_tril_pos",
    "test_scatter_with_axis", "test_div_int8", "test_mod_int64_fmod",
    "test_split_variable_parts_1d_opset18", "test_expand_dim_changed", "test_pow", "test_resize_upsample_sizes_nearest",
    "test_qlinearmatmul_2D_uint8_float16", "test_if_opt", "test_loop16_seq_none", "test_if_seq",
    "test_scatter_elements_with_axis", "test_sequence_map_identity_1_sequence", "test_loop11", "test_identity_opt",
    "test_attention_4d_gqa_with_past_and_present_fp16_expanded", "test_dft", "test_equal_string",
    "test_isinf_float16", "test_abs", "test_conv_with_strides_padding", "test_maxpool_2d_default",
    "test_averagepool_2d_default", "test_batchnorm_example", "test_gemm_default_matrix_bias", "test_matmul_2d",
    "test_softmax_axis_1", "test_reduce_mean_default_axes_keepdims_example", "test_reshape_reduced_dims",
    "test_transpose_default", "test_concat_2d_axis_0", "test_slice", "test_argmax_default_axis_example",
    "test_top_k", "test_where_example", "test_einsum_batch_matmul", "test_layer_normalization_2d_axis0",
    "test_gelu_default_1", "test_nonzero_example", "test_onehot_with_axis",
    "test_tile",
]
#: Cases that must come out written and right (each was broken by a bug issue 23 names).
MUST_PASS = [
    "test_gather_0", "test_gather_elements_0", "test_split_1d_uneven_split_opset18", "test_split_to_sequence_1",
    "test_gridsample", "test_clip_default_int8_inbounds", "test_triu_one_row", "test_tril_pos",
    "test_scatter_with_axis", "test_div_int8", "test_expand_dim_changed", "test_pow",
    "test_resize_upsample_sizes_nearest", "test_conv_with_strides_padding", "test_top_k",
]
FP16_SAMPLE = ["test_gather_0", "test_conv_with_strides_padding", "test_softmax_axis_1", "test_pow", "test_div_int8",
               "test_resize_upsample_sizes_nearest", "test_layer_normalization_2d_axis0", "test_gridsample",
               "test_isinf_float16", "test_top_k", "test_einsum_batch_matmul"]


def _bench():
    spec = importlib.util.spec_from_file_location("onnx_node_tests", ROOT / "benchmarks" / "onnx_node_tests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def sample(bench, tmp_path_factory):
    cases = bench.all_cases()
    chosen = {name: cases[name] for name in SAMPLE}
    runnable = bench.runnable_cases(chosen)
    assert set(MUST_PASS) <= set(runnable)
    return runnable


def _check(results: list[dict]) -> dict[str, dict]:
    by_name = {r["name"]: r for r in results}
    wrong = [(r["name"], r["outcome"], r.get("why"), r.get("stderr")) for r in results
             if r["outcome"] not in ("pass", "refused", "not ready")]
    assert not wrong, wrong
    for r in results:
        if r["outcome"] == "refused":
            assert len(r["stderr"]) == 1 and r["stderr"][0].startswith("graphfix: error: "), r
    return by_name


@pytest.mark.parametrize("target", ["cpu", "cuda", "tensorrt"])
def test_node_test_sample_exports_right_or_refuses_in_one_line(bench, sample, target):
    results = _check(bench.run_cases(sample, target))
    # not ready: written and right, with a readiness FAIL (an op TensorRT lacks)
    failed = {n: results[n] for n in MUST_PASS if results[n]["outcome"] not in ("pass", "not ready")}
    assert not failed, failed
    volumetric = results["test_gridsample_volumetric_bilinear_align_corners_0"]
    assert volumetric["outcome"] == "refused" and "GridSample on a rank-5 input" in volumetric["stderr"][0]
    assert "--opset 20" in volumetric["stderr"][0]  # an opset graphfix writes
    if "test_identity_sequence" in results:
        sequence = results["test_identity_sequence"]
        assert sequence["outcome"] == "refused", sequence  # a sequence of tensors of no declared shape
        assert "input x (Sequence(Tensor(FLOAT))) has no declared shape" in sequence["stderr"][0], sequence


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_node_test_sample_in_fp16(bench, sample, target):
    results = _check(bench.run_cases({n: sample[n] for n in FP16_SAMPLE if n in sample}, target, fp16=True))
    assert results["test_conv_with_strides_padding"]["outcome"] == "pass"


# ----- parity inputs, per input -------------------------------------------------------------
def _model(nodes, inputs, outputs, inits=(), opset=17) -> Model:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return Model.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def test_parity_feeds_each_input_its_own_shape_and_domain():
    """Gather data [5,4,3,2] with indices [3] (fixed): both fed as declared, the indices within
    the axis; a scalar stays a scalar; an int divisor is never zero; a symbolic dim 0 takes the rows."""
    model = _model(
        [helper.make_node("Gather", ["data", "idx"], ["g"], axis=1),
         helper.make_node("Div", ["a", "b"], ["q"]),
         helper.make_node("Add", ["s", "s"], ["t"])],
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [5, 4, 3, 2]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, [3]),
         helper.make_tensor_value_info("a", TensorProto.INT8, ["N", 4]),
         helper.make_tensor_value_info("b", TensorProto.INT8, ["N", 4]),
         helper.make_tensor_value_info("s", TensorProto.INT32, [])],
        [helper.make_tensor_value_info(n, t, None) for n, t in
         (("g", TensorProto.FLOAT), ("q", TensorProto.INT8), ("t", TensorProto.INT32))],
    )
    feeds = _parity.varied_feeds(model, batch=5)
    assert len(feeds) == 2
    for run in feeds:
        assert run["data"].shape == (5, 4, 3, 2) and run["idx"].shape == (3,) and run["s"].shape == ()
        assert run["a"].shape == (5, 4) and run["b"].dtype == np.int8
        assert run["idx"].min() >= 0 and run["idx"].max() <= 3 and (run["b"] != 0).all()
        model.run(run)  # onnxruntime accepts every feed as declared
    assert _parity.compare(model, model)["ok"]


def test_parity_tries_another_int_domain_when_the_reference_refuses_one():
    """Expand's shape input: small ints 1..3 may not broadcast with [3, 1]; ones always do."""
    model = _model([helper.make_node("Expand", ["x", "shape"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 1]),
                    helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    figures = _parity.compare(model, model)
    assert figures["ok"], figures


def test_parity_compares_nan_and_inf_without_warnings(recwarn):
    """Pow of negative bases makes NaN on both sides: equal (no 'differs by 0' refusal, no
    All-NaN warning); a NaN only in the candidate fails."""
    ref = _model([helper.make_node("Pow", ["x", "y"], ["z"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                 [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    figures = _parity.compare(ref, ref)
    assert figures["ok"] and figures["outputs"]["z"]["max_abs_diff"] == 0.0, figures
    nan = _model([helper.make_node("Pow", ["x", "y"], ["p"]), helper.make_node("Sqrt", ["p"], ["z"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                 [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    assert not _parity.compare(ref, nan)["ok"]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# ----- crash isolation ----------------------------------------------------------------------
def _segfault(*_args):
    import os

    os.kill(os.getpid(), signal.SIGSEGV)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_crashing_parity_session_is_one_line_exit_1(monkeypatch, tmp_path, capsys):
    from graphfix.cli import main

    monkeypatch.setattr(_parity, "_run_sessions", _segfault)
    path = tmp_path / "m.onnx"
    onnx.save(_model([helper.make_node("Relu", ["x"], ["y"])],
                     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])]).to_proto(), str(path))
    code = main(["export", str(path), "--target", "cpu", "-o", str(tmp_path / "out.onnx"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"graphfix: error: {path}: ") and "onnxruntime crashed (SIGSEGV)" in err[0]
    assert not (tmp_path / "out.onnx").exists()


def test_an_exported_model_onnxruntime_refuses_is_a_parity_error():
    ref = _model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    broken = _model([helper.make_node("Relu", ["x"], ["y"], domain="no.such.domain")],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(GraphfixError) as info:
        _parity.compare(ref, broken)
    assert info.value.kind == "parity" and "cannot run the exported model" in info.value.one_line()
    assert "\n" not in info.value.one_line()


# ----- passes -------------------------------------------------------------------------------
def test_batch_pass_batches_only_the_image_input():
    """data [5,4,3,2] gets the batch; indices [3] and Resize's sizes [4] keep their shapes."""
    model = _model(
        [helper.make_node("Gather", ["data", "idx"], ["g"], axis=1),
         helper.make_node("Resize", ["g", "", "", "sizes"], ["r"], mode="nearest")],
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [5, 4, 3, 2]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, [3]),
         helper.make_tensor_value_info("sizes", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    P.BatchDimPass("dynamic")(model.ir)
    shapes = {v.name: [d if isinstance(d, int) else str(d) for d in v.shape] for v in model.ir.graph.inputs}
    assert shapes == {"data": ["batch", 4, 3, 2], "idx": [3], "sizes": [4]}
    fixed = _model([helper.make_node("Add", ["a", "b"], ["c"])],
                   [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 4]),
                    helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 4])],
                   [helper.make_tensor_value_info("c", TensorProto.FLOAT, [3, 4])])
    assert not P.BatchDimPass("dynamic")(fixed.ir).modified  # no image input: nothing tied


@pytest.mark.parametrize("known", [True, False])
def test_split18_uneven_num_outputs_lowers_to_split13_sizes(known):
    """7 split in 3: [3, 3, 1] (ceil chunks), not 3 even parts; computed in the graph when the
    axis size is unknown to the pass."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 7] if known else [2, "W"])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b", "c")]
    proto = _model([helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)], [x], outs,
                   opset=18).to_proto()
    before = Model.from_proto(proto)
    after = Model.from_proto(proto)
    P.ConvertOpsetPass(17)(after.ir)
    assert after.opset == 17
    onnx.shape_inference.infer_shapes(after.to_proto(), check_type=True, strict_mode=True)
    feeds = {"x": np.arange(14, dtype=np.float32).reshape(2, 7)}
    got, want = after.run(feeds), before.run(feeds)
    assert [got[n].shape for n in "abc"] == [(2, 3), (2, 3), (2, 1)]
    assert all(np.array_equal(got[n], want[n]) for n in "abc")


def test_gridsample_22_lowers_to_bilinear_and_nd_is_refused_by_name():
    def grid(rank: int, mode: str):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 3] + [3] * (rank - 4))
        g = helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, 2, 2] + [2] * (rank - 4) + [rank - 2])
        return _model([helper.make_node("GridSample", ["x", "g"], ["y"], mode=mode)], [x, g],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], opset=22)

    model = grid(4, "linear")
    P.ConvertOpsetPass(17)(model.ir)
    assert next(iter(model.ir.graph)).attributes.get_string("mode") == "bilinear"
    onnx.shape_inference.infer_shapes(model.to_proto(), check_type=True, strict_mode=True)
    with pytest.raises(GraphfixError) as info:
        P.ConvertOpsetPass(17)(grid(5, "linear").ir)
    assert "GridSample on a rank-5 input" in str(info.value) and "--opset 20" in str(info.value)


def test_constant_folding_leaves_split_to_sequence_with_an_unknown_split():
    model = _model([helper.make_node("SplitToSequence", ["x", "s"], ["seq"], axis=0)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2]),
                    helper.make_tensor_value_info("s", TensorProto.INT64, [])],
                   [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)])
    P.FoldConstantsPass()(model.ir)  # raised RuntimeError in onnxscript's SplitToSequence rewrite
    assert [n.op_type for n in model.ir.graph] == ["SplitToSequence"]
    assert list(model.ir.graph.inputs[1].shape) == []  # the hidden shape is put back


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
