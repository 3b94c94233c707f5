"""apply_thresholds: metadata, the `labels` output, at-least-one, no mutation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphfix.calibrate import apply_thresholds, decide, fit_thresholds, stored_decision
from graphfix.data import Dataset
from graphfix.errors import GraphfixError
from graphfix.model import load_onnx


def test_labels_output_matches_numpy(tiny_model, make, tmp_path):
    x, y = make(tiny_model, 120)
    ds = Dataset.from_arrays(x, y, tiny_model.labels)
    with pytest.raises(GraphfixError, match=r"the head is untrained \(no graphfix.training: random weights from "
                                            r"swap-head\); thresholds fitted on it mean nothing"):
        fit_thresholds(tiny_model, ds, "f1", min_positives=1)  # the API refuses as `calibrate` does
    th = fit_thresholds(tiny_model, ds, "f1", min_positives=1, untrained=True)
    before = tiny_model.to_bytes()
    new = apply_thresholds(tiny_model, th)
    assert tiny_model.to_bytes() == before
    path = new.save(tmp_path / "m.onnx")
    onnx.checker.check_model(str(path))
    loaded = load_onnx(path)
    assert loaded.thresholds == [float(v) for v in th.values]
    assert loaded.metadata["calibration"]["objective"] == "f1"
    out = loaded.run(x)
    assert out["labels"].dtype == np.bool_
    np.testing.assert_array_equal(out["labels"], decide(out["probabilities"], th.values))
    assert stored_decision(loaded)["rule"] == "thresholds"


def test_at_least_one_in_graph(tiny_model, make):
    x, _ = make(tiny_model, 50)
    new = apply_thresholds(tiny_model, [0.9999] * 4, at_least_one=True)
    out = new.run(x)
    assert out["labels"].any(axis=1).all()
    np.testing.assert_array_equal(out["labels"], decide(out["probabilities"], [0.9999] * 4, at_least_one=True))
    assert new.metadata["calibration"]["at_least_one"] is True


def test_reapply_replaces_and_metadata_only(tiny_model):
    a = apply_thresholds(tiny_model, [0.1, 0.2, 0.3, 0.4])
    b = apply_thresholds(a, [0.5, 0.5, 0.5, 0.5], at_least_one=True)
    assert b.output_names.count("labels") == 1
    assert b.ir.graph.initializers["graphfix_thresholds"].const_value.numpy().tolist() == [0.5] * 4
    c = apply_thresholds(b, [0.5] * 4, labels_output=False)
    assert "labels" not in c.output_names and "graphfix_thresholds" not in c.ir.graph.initializers
    assert not any(n.name.startswith("graphfix_labels") for n in c.ir.graph)
    assert c.thresholds == [0.5] * 4


def test_bad_thresholds(tiny_model):
    with pytest.raises(GraphfixError, match="3 thresholds for 4 classes"):
        apply_thresholds(tiny_model, [0.5] * 3)
    with pytest.raises(GraphfixError, match="finite"):
        apply_thresholds(tiny_model, [0.5, np.nan, 0.5, 0.5])


@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("keep_one", [False, True])
def test_other_opsets(build, make, opset, keep_one):
    """Opset 18 takes ReduceMax axes as an input; below 12 there is no GreaterOrEqual."""
    m = build()
    m.ir.opset_imports[""] = opset
    x, _ = make(m, 10)
    out = apply_thresholds(m, [0.5] * 4, at_least_one=keep_one).run(x)
    np.testing.assert_array_equal(out["labels"], decide(out["probabilities"], [0.5] * 4, at_least_one=keep_one))
