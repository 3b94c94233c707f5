"""Exact threshold search: equality with a brute-force search, objectives, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphfix.calibrate.thresholds import midpoint32, parse_objective, search_thresholds
from graphfix.errors import GraphfixError


def brute_force(s: np.ndarray, y: np.ndarray, kind: str, value: float):
    """Try every cut between distinct scores (predict s >= u for each distinct u), no sorting tricks.

    Ties between equal objective values go to the highest cut (fewest predictions).
    Returns (threshold, objective, tp, fp) or None without positives.
    """
    s = s.astype(np.float32)
    y = y.astype(bool)
    positives = int(y.sum())
    if positives == 0:
        return None
    best = None
    for u in sorted(set(s.tolist()), reverse=True):
        pred = s >= np.float32(u)
        tp = int((pred & y).sum())
        fp = int((pred & ~y).sum())
        if kind == "fbeta":
            b2 = value * value
            obj = (1.0 + b2) * float(tp) / (b2 * positives + float(tp) + float(fp))
            key = (obj,)
        elif kind == "precision":
            prec = float(tp) / (float(tp) + float(fp))
            feasible = prec >= value
            key = (feasible, tp if feasible else prec)  # feasible first, then most recall; else best precision
            obj = prec
        else:  # recall
            prec = float(tp) / (float(tp) + float(fp))
            key = (tp >= value * positives, prec)
            obj = tp / positives
        if best is None or key > best[0]:
            lower = s[s < np.float32(u)]
            t = np.float32(u) if len(lower) == 0 else midpoint32(lower.max(), u)
            best = (key, t, obj, tp, fp)
    return best[1], best[2], best[3], best[4]


def _check_equal(scores, y, objective):
    obj = parse_objective(objective)
    res = search_thresholds(scores, y, obj, chunk=3)
    for j in range(scores.shape[1]):
        ref = brute_force(scores[:, j], y[:, j], obj.kind, obj.value)
        if ref is None:
            assert np.isnan(res.thresholds[j]) and res.status[j] == "no_positives"
            continue
        t, v, tp, fp = ref
        assert res.thresholds[j] == t, (j, res.thresholds[j], t)
        assert res.objective[j] == pytest.approx(v, abs=0, rel=1e-12)
        assert (res.tp[j], res.fp[j]) == (tp, fp)
        # the threshold reproduces the chosen cut exactly: ties never split
        pred = scores[:, j].astype(np.float32) >= res.thresholds[j]
        assert int((pred & (y[:, j] != 0)).sum()) == tp
        assert int((pred & (y[:, j] == 0)).sum()) == fp


matrices = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.7, 0.9, 1.0, 0.3333]), min_size=5, max_size=5),
                 min_size=n, max_size=n),
        st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=n, max_size=n),
    )
)


@settings(max_examples=100, deadline=None, database=None)
@given(matrices, st.sampled_from(["f1", "f2", "fbeta:0.5", "precision@0.6", "recall@0.75", "recall@1"]))
def test_search_equals_brute_force_with_ties(data, objective):
    scores = np.array(data[0], np.float32)
    y = np.array(data[1], np.uint8)
    _check_equal(scores, y, objective)


@settings(max_examples=60, deadline=None, database=None)
@given(st.integers(0, 2**31 - 1))
def test_search_equals_brute_force_random_floats(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    scores = rng.random((n, 4)).astype(np.float32)
    scores[:, 1] = np.round(scores[:, 1] * 4) / 4  # many ties
    y = (rng.random((n, 4)) < rng.random(4)).astype(np.uint8)
    _check_equal(scores, y, "f1")


def test_adjacent_float32_scores_are_not_merged():
    a = np.float32(0.5)
    b = np.nextafter(a, np.float32(1))
    scores = np.array([[a], [b]], np.float32)
    y = np.array([[0], [1]])
    res = search_thresholds(scores, y)
    assert res.thresholds[0] == b  # no float32 strictly between: the cut sits on b
    assert res.tp[0] == 1 and res.fp[0] == 0


def test_zero_positive_class_gets_nan_and_status():
    scores = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]], np.float32)
    y = np.array([[0, 1], [0, 0], [0, 1]])
    res = search_thresholds(scores, y)
    assert np.isnan(res.thresholds[0]) and res.status[0] == "no_positives"
    assert res.status[1] == "ok" and res.thresholds[1] == pytest.approx(0.7)  # all of 0.9, 0.8, 0.7 cut at 0.7


def test_all_positive_class_predicts_everything():
    scores = np.array([[0.2], [0.4], [0.9]], np.float32)
    res = search_thresholds(scores, np.ones((3, 1)))
    assert res.thresholds[0] == np.float32(0.2) and res.tp[0] == 3 and res.objective[0] == 1.0


def test_constant_scores_single_cut():
    scores = np.full((5, 1), 0.4, np.float32)
    y = np.array([[1], [0], [1], [0], [0]])
    res = search_thresholds(scores, y)
    assert res.thresholds[0] == np.float32(0.4)  # the only legal cut: all or nothing, tie kept whole
    assert (res.tp[0], res.fp[0]) == (2, 3)


def test_single_sample():
    res = search_thresholds(np.array([[0.3, 0.6]], np.float32), np.array([[1, 0]]))
    assert res.thresholds[0] == np.float32(0.3) and np.isnan(res.thresholds[1])


def test_precision_target_infeasible_is_marked():
    scores = np.array([[0.9], [0.8], [0.1]], np.float32)
    y = np.array([[0], [1], [0]])
    res = search_thresholds(scores, y, "precision@0.9")
    assert res.status[0] == "infeasible"
    assert res.objective[0] == pytest.approx(0.5)  # the best precision any cut reaches


def test_micro_f1_single_threshold():
    rng = np.random.default_rng(0)
    scores = rng.random((50, 3)).astype(np.float32)
    y = (scores + 0.3 * rng.random((50, 3)) > 0.7).astype(np.uint8)
    res = search_thresholds(scores, y, "micro-f1")
    assert len(set(res.thresholds.tolist())) == 1
    flat = search_thresholds(scores.reshape(-1, 1), y.reshape(-1, 1), "f1")
    assert res.thresholds[0] == flat.thresholds[0]


@pytest.mark.parametrize("spec,kind,value", [
    ("f1", "fbeta", 1.0), ("F2", "fbeta", 2.0), ("fbeta:0.5", "fbeta", 0.5),
    ("precision@0.9", "precision", 0.9), ("recall@0.8", "recall", 0.8), ("micro-f1", "micro-f1", 1.0),
])
def test_parse_objective(spec, kind, value):
    obj = parse_objective(spec)
    assert (obj.kind, obj.value) == (kind, value)


@pytest.mark.parametrize("spec", ["f3", "fbeta:-1", "precision@1.5", "recall@x", "accuracy"])
def test_parse_objective_rejects(spec):
    with pytest.raises(GraphfixError) as err:
        parse_objective(spec)
    assert err.value.kind == "usage"


def test_bad_scores_rejected():
    with pytest.raises(GraphfixError):
        search_thresholds(np.array([[np.nan]], np.float32), np.array([[1]]))
    with pytest.raises(GraphfixError):
        search_thresholds(np.zeros((0, 2), np.float32), np.zeros((0, 2)))
    with pytest.raises(GraphfixError):
        search_thresholds(np.zeros((3, 2), np.float32), np.zeros((3, 1)))
