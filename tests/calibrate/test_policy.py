"""Few/zero-positive policy, folds, at-least-one, warnings (fit_thresholds_from_scores)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphfix.calibrate import decide, fit_thresholds_from_scores
from graphfix.errors import GraphfixError


def _data(n=200, n_cls=4, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_cls)) < 0.3).astype(np.uint8)
    scores = np.clip(0.35 * y + 0.6 * rng.random((n, n_cls)), 0, 1).astype(np.float32)
    return scores, y


def test_all_classes_tuned():
    s, y = _data()
    th = fit_thresholds_from_scores(s, y, "f1")
    assert th.methods == ["tuned"] * 4 and th.fallbacks == []
    assert th.heldout["macro_f1"] > 0.5
    json.dumps(th.to_dict())


def test_zero_positive_class_falls_back_to_global_without_train():
    s, y = _data()
    y[:, 2] = 0
    th = fit_thresholds_from_scores(s, y, "f1", labels=["a", "b", "c", "d"])
    assert th.methods[2] == "fallback:global"
    assert th.values[2] == pytest.approx(th.global_threshold)
    assert "0 held-out positives" in th.reasons[2] and "no training scores" in th.reasons[2]
    assert [f["label"] for f in th.fallbacks] == ["c"]
    # never predicted everywhere: the global threshold is a real cut
    assert decide(s, th.values)[:, 2].mean() < 0.9


def test_few_positive_class_falls_back_to_train_scores():
    s, y = _data()
    y[:, 1] = 0
    y[:2, 1] = 1  # 2 < min_positives=3
    ts, ty = _data(seed=5)
    th = fit_thresholds_from_scores(s, y, "f1", train_scores=ts, train_y=ty)
    assert th.methods[1] == "fallback:train"
    assert "2 held-out positives" in th.reasons[1] and "training positives" in th.reasons[1]
    from graphfix.calibrate.thresholds import search_thresholds

    assert th.values[1] == search_thresholds(ts[:, [1]], ty[:, [1]]).thresholds[0]


def test_train_without_positives_uses_global():
    s, y = _data()
    y[:, 3] = 0
    ts, ty = _data(seed=5)
    ty[:, 3] = 0
    th = fit_thresholds_from_scores(s, y, train_scores=ts, train_y=ty)
    assert th.methods[3] == "fallback:global" and "only 0 training positives" in th.reasons[3]


def test_no_class_has_positives_global_is_half():
    s, _ = _data()
    th = fit_thresholds_from_scores(s, np.zeros_like(s), "f1")
    assert th.global_threshold == 0.5 and set(th.methods) == {"fallback:global"}


def test_all_positive_class_and_single_sample():
    s, y = _data()
    y[:, 0] = 1
    th = fit_thresholds_from_scores(s, y)
    assert th.methods[0] == "tuned" and th.values[0] == s[:, 0].min()
    assert not any("predicts every" in w for w in th.warnings)  # all positive: predicting all is right
    one = fit_thresholds_from_scores(s[:1], y[:1], min_positives=1)
    assert len(one.values) == 4


def test_uninformative_class_is_warned():
    rng = np.random.default_rng(0)
    s = np.full((50, 1), 0.5, np.float32)
    y = (rng.random((50, 1)) < 0.6).astype(np.uint8)
    th = fit_thresholds_from_scores(s, y)
    assert any("predicts every held-out sample" in w for w in th.warnings)


def test_constant_scores_no_crash():
    s = np.full((10, 2), 0.3, np.float32)
    y = np.zeros((10, 2), np.uint8)
    y[:5, 0] = 1
    th = fit_thresholds_from_scores(s, y)
    assert th.methods == ["tuned", "fallback:global"]


def test_micro_f1_objective_is_global():
    s, y = _data()
    th = fit_thresholds_from_scores(s, y, "micro-f1")
    assert set(th.methods) == {"global"} and len(set(th.values.tolist())) == 1


def test_folds_average_is_deterministic():
    s, y = _data(n=300)
    a = fit_thresholds_from_scores(s, y, folds=3, seed=1)
    b = fit_thresholds_from_scores(s, y, folds=3, seed=1)
    assert np.array_equal(a.values, b.values) and a.folds == 3
    plain = fit_thresholds_from_scores(s, y)
    assert np.abs(a.values - plain.values).max() < 0.2
    with pytest.raises(GraphfixError):
        fit_thresholds_from_scores(s, y, folds=1)


def test_at_least_one():
    s = np.array([[0.1, 0.2], [0.9, 0.3]], np.float32)
    assert decide(s, [0.5, 0.5], at_least_one=True).tolist() == [[False, True], [True, False]]
    assert decide(s, [0.5, 0.5]).tolist() == [[False, False], [True, False]]
    assert decide(s, 0.0, top_k=1).tolist() == [[False, True], [True, False]]


def test_precision_objective_reports_infeasible():
    s = np.array([[0.9], [0.8], [0.7], [0.1]], np.float32)
    y = np.array([[0], [1], [0], [1]])
    th = fit_thresholds_from_scores(s, y, "precision@0.95", min_positives=1)
    assert th.methods == ["infeasible"] and "precision@0.95" in th.reasons[0]


def test_few_heldout_positives_pool_the_out_of_fold_scores():
    """A class with fewer than oof_below held-out positives: its threshold is the exact search on
    its held-out and out-of-fold scores together; the others stay on the held-out ones. Each
    class's source is stated (per class, in the summary stored as graphfix.calibration)."""
    from graphfix.calibrate.thresholds import search_thresholds

    s, y = _data()
    y[:, 1] = 0
    y[:4, 1] = 1  # 4 held-out positives: < 10
    y[:, 2] = 0
    y[:1, 2] = 1  # 1 held-out positive
    os_, oy = _data(n=300, seed=7)
    oy[:, 3] = 0  # class 3 (enough held-out positives) has none out of fold: not needed
    th = fit_thresholds_from_scores(s, y, "f1", labels=list("abcd"), oof_scores=os_, oof_y=oy, oof_below=10)
    assert th.sources == ["heldout", "heldout+oof", "heldout+oof", "heldout"]
    assert th.methods == ["tuned"] * 4 and th.fallbacks == []
    for j in (1, 2):
        pooled = search_thresholds(np.concatenate([s[:, [j]], os_[:, [j]]]), np.concatenate([y[:, [j]], oy[:, [j]]]))
        assert th.values[j] == pooled.thresholds[0]
    assert th.values[0] == search_thresholds(s[:, [0]], y[:, [0]]).thresholds[0]
    n_oof = int(oy[:, 1].sum())
    assert th.reasons[1] == f"4 held-out positives (< 10); fitted on them and {n_oof} out-of-fold training positives"
    summary = th.summary()
    assert summary["sources"] == {"heldout": 2, "heldout+oof": 2} and summary["heldout+oof"] == ["b", "c"]
    assert summary["oof_below"] == 10 and [c["source"] for c in th.to_dict()["per_class"]] == th.sources
    json.dumps(th.to_dict())
    # without out-of-fold scores nothing changes: held-out only, the class with 1 positive falls back
    plain = fit_thresholds_from_scores(s, y, "f1", labels=list("abcd"))
    assert plain.sources == ["heldout", "heldout", "global", "heldout"] and plain.summary()["oof_below"] is None
    assert plain.values[1] == search_thresholds(s[:, [1]], y[:, [1]]).thresholds[0]
    # too few positives even together: the global threshold, saying so
    oy[:, 2] = 0
    th = fit_thresholds_from_scores(s, y, "f1", oof_scores=os_, oof_y=oy, oof_below=10)
    assert th.sources[2] == "global" and th.methods[2] == "fallback:global"
    assert th.reasons[2] == "1 held-out positive (< 3); only 0 out-of-fold training positives: global micro-F1 threshold"
    off = fit_thresholds_from_scores(s, y, "f1", oof_scores=os_, oof_y=oy)  # the default: oof_below 0, off
    assert off.sources == ["heldout", "heldout", "global", "heldout"]
    with pytest.raises(GraphfixError, match="out-of-fold scores must be"):
        fit_thresholds_from_scores(s, y, "f1", oof_scores=os_[:, :3], oof_y=oy[:, :3])
