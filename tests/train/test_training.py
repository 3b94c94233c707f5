"""Head training: exactness against scikit-learn, convergence, CV, losses, count head, the graph."""

from __future__ import annotations

import numpy as np
import pytest

from graphfix.calibrate import decide
from graphfix.data import Dataset, model_scores
from graphfix.train import train_head
from graphfix.metrics import mean_average_precision
from graphfix.train.losses import make_loss
from graphfix.train.solver import Problem, Standardization, solve
from graphfix.train.head_fit import LAMBDA_GRID, TrainConfig, fit_head
from graphfix.errors import GraphfixError


@pytest.fixture
def split(tiny_model, make):
    x, y = make(tiny_model, 300)
    labels = tiny_model.labels
    return (Dataset.from_arrays(x[:200], y[:200], labels), Dataset.from_arrays(x[200:], y[200:], labels))


def _problem(seed: int, n: int = 400, n_feat: int = 12, n_cls: int = 4):
    """Standardised features (one constant column), labels from a noisy linear model, one class
    with exactly 2 positives."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_feat)) @ rng.standard_normal((n_feat, n_feat)) * 0.5
    x[:, 2] = 3.0
    z = x @ rng.standard_normal((n_feat, n_cls)) + 1.5 * rng.standard_normal((n, n_cls))
    y = (z > np.quantile(z, 0.7, axis=0)).astype(np.uint8)
    y[:, -1] = 0
    y[rng.choice(n, 2, replace=False), -1] = 1
    std = x.std(axis=0)
    xs = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return xs, y


def _sklearn_objective(xs, y, coef, intercept, lam):
    z = xs @ coef + intercept
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + lam / 2 * coef @ coef)


@pytest.mark.parametrize("seed,C", [(0, 1.0), (1, 0.05), (2, 20.0)])
def test_weights_equal_sklearn(seed, C):
    from sklearn.linear_model import LogisticRegression

    xs, y = _problem(seed)
    n = len(xs)
    lam = 1.0 / (C * n)
    fit = fit_head(xs.astype(np.float32), y, TrainConfig(loss="bce", weight_decay=lam, tol=1e-10))
    assert fit.history["converged"] and fit.history["grad_norm"] <= 1e-8
    x32 = xs.astype(np.float32).astype(np.float64)  # the exact values graphfix saw
    for j in range(y.shape[1]):
        ref = LogisticRegression(C=C, tol=1e-10, max_iter=100000).fit(x32, y[:, j])
        dw = np.abs(fit.weight[j].astype(np.float64) - ref.coef_[0]).max()
        assert dw <= 1e-4, f"class {j} ({y[:, j].sum()} positives): max abs weight diff {dw:.3g}"
        assert abs(fit.bias[j] - ref.intercept_[0]) <= 1e-4
        ours = _sklearn_objective(x32, y[:, j], fit.weight[j].astype(np.float64), float(fit.bias[j]), lam)
        theirs = _sklearn_objective(x32, y[:, j], ref.coef_[0], ref.intercept_[0], lam)
        assert abs(ours - theirs) <= 1e-6 * abs(theirs), f"class {j}: objective {ours!r} vs sklearn {theirs!r}"
    # the constant feature gets no weight
    assert np.abs(fit.weight[:, 2]).max() == 0.0


@pytest.mark.parametrize("name,kw", [
    ("bce", {}),
    ("bce", {"pos_weight": "balanced"}),
    ("asl", {}),
    ("asl", {"asl_clip": 0.0, "asl_gamma_pos": 1.0}),
    ("squared", {}),
    ("softmax", {"count": True}),
])
def test_gradients_match_finite_differences(name, kw):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((60, 5)) * [1, 5, 0.1, 2, 1] + [0, 3, -1, 0, 2]).astype(np.float32)
    y = (rng.random((60, 3)) < 0.35).astype(np.uint8)
    loss = make_loss(name, y, **kw)
    prob = Problem(x, y, loss, Standardization.of(x))
    theta = rng.standard_normal((6, loss.n_columns)) * 0.3
    cols = np.arange(loss.n_columns)
    lam = 0.01
    _, grad = prob.value_grad(theta, cols, lam)
    eps = 1e-6
    for i, j in [(0, 0), (3, 1), (5, 2), (1, loss.n_columns - 1), (5, loss.n_columns - 1)]:
        tp, tm = theta.copy(), theta.copy()
        tp[i, j] += eps
        tm[i, j] -= eps
        fd = (prob.value_grad(tp, cols, lam)[0].sum() - prob.value_grad(tm, cols, lam)[0].sum()) / (2 * eps)
        assert abs(fd - grad[i, j]) <= 1e-6 * max(1.0, abs(fd)), (i, j, fd, grad[i, j])


@pytest.mark.parametrize("kw", [
    {"loss": "bce"},
    {"loss": "bce", "pos_weight": "balanced"},
    {"loss": "asl"},
    {"loss": "squared"},
    {"loss": "softmax", "count": True},
])
def test_every_loss_converges_with_cv(kw):
    xs, y = _problem(4, n=300)
    fit = fit_head(xs.astype(np.float32), y, TrainConfig(**kw))
    h = fit.history
    assert h["converged"] and h["grad_norm"] <= 1e-6, h["stopped"]
    assert h["selected_by"] == "3-fold CV mAP"
    curve = [c["score"] for c in h["cv"]]
    assert h["weight_decay"] == h["cv"][int(np.argmax(curve))]["weight_decay"]
    assert [c["weight_decay"] for c in h["cv"]] == list(LAMBDA_GRID[: len(curve)])
    assert fit.weight.shape == (y.shape[1] + (1 if kw.get("count") else 0), xs.shape[1])


def test_memory_mapped_features(tmp_path):
    xs, y = _problem(5)
    path = tmp_path / "f.npy"
    np.save(path, xs.astype(np.float32))
    mapped = np.load(path, mmap_mode="r")
    a = fit_head(mapped, y, TrainConfig(weight_decay=1e-3))
    b = fit_head(np.array(mapped), y, TrainConfig(weight_decay=1e-3))
    assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)


def test_solver_stops_on_gradient_not_epochs():
    xs, y = _problem(6)
    loss = make_loss("bce", y)
    prob = Problem(xs.astype(np.float32), y, loss, Standardization.of(xs.astype(np.float32)))
    loose = solve(prob, 1e-3, gtol=1e-3)
    tight = solve(prob, 1e-3, gtol=1e-9)
    assert loose.grad_max.max() <= 1e-3 and set(loose.status) == {"gtol"}
    assert tight.grad_max.max() <= 1e-8 and set(tight.status) <= {"gtol", "ftol"}
    assert tight.iterations.max() > loose.iterations.max()
    assert tight.objective.sum() <= loose.objective.sum()


def test_training_learns_and_leaves_input(tiny_model, split):
    train, val = split
    before = tiny_model.to_bytes()
    base_scores, y = model_scores(tiny_model, val)
    new, hist = train_head(tiny_model, train, val)
    assert tiny_model.to_bytes() == before
    scores, _ = model_scores(new, val)
    assert mean_average_precision(y, scores) > mean_average_precision(y, base_scores) + 0.1
    assert hist["selected_by"] == "validation mAP" and len(hist["cv"]) >= 3
    meta = new.metadata["training"]
    assert meta["loss"] == hist["loss"] and meta["weight_decay"] == hist["weight_decay"] and meta["val_mAP"] is not None
    assert meta["converged"] and meta["grad_norm"] <= 1e-6  # (a warm start at the optimum takes 0 iterations)
    ort = new.run(val.x)["probabilities"]
    np.testing.assert_allclose(ort, scores, rtol=1e-5, atol=1e-6)


def test_deterministic_bytes(tiny_model, split):
    train, _ = split
    a, _ = train_head(tiny_model, train, seed=3)
    b, _ = train_head(tiny_model, train, seed=3, cache=False)
    assert a.to_bytes() == b.to_bytes()
    c, _ = train_head(tiny_model, train, weight_decay=0.5)
    assert c.to_bytes() != a.to_bytes()


@pytest.mark.parametrize("kw", [
    {"loss": "asl"},
    {"loss": "bce", "pos_weight": "balanced", "weight_decay": 0.0},
    {"loss": "asl", "asl_gamma_pos": 1.0, "asl_clip": 0.0},
])
def test_other_losses(tiny_model, split, kw):
    train, val = split
    new, hist = train_head(tiny_model, train, **kw)
    scores, y = model_scores(new, val)
    assert mean_average_precision(y, scores) > 0.6
    assert hist["selected_by"] in ("3-fold CV mAP", "fixed")


def test_softmax_count_head_and_decisions(tiny_model, split):
    train, val = split
    new, hist = train_head(tiny_model, train, loss="softmax", decision="count")
    out = new.run(val.x)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    assert out["label_count"].shape == (len(val),) and (out["label_count"] > 0).all()
    # the count tracks the true number of labels
    k = val.y.sum(axis=1)
    assert np.corrcoef(out["label_count"], k)[0, 1] > 0.3
    pred = decide(out["probabilities"], count=out["label_count"])
    assert np.array_equal(out["labels"], pred) and (pred.sum(axis=1) >= 1).all()
    scores, _ = model_scores(new, val)
    np.testing.assert_allclose(scores, out["probabilities"], rtol=1e-5, atol=1e-6)
    topk, _ = train_head(tiny_model, train, loss="softmax", decision="topk", top_k=2)
    out = topk.run(val.x)
    assert np.array_equal(out["labels"], decide(out["probabilities"], top_k=2))
    assert topk.metadata["training"]["top_k"] == 2


def test_retraining_drops_stale_thresholds(tiny_model, split):
    from graphfix.calibrate import apply_thresholds

    train, _ = split
    calibrated = apply_thresholds(tiny_model, [0.5] * 4)
    assert "labels" in calibrated.output_names
    new, _ = train_head(calibrated, train, weight_decay=1e-3)
    assert "labels" not in new.output_names and new.thresholds is None
    counted, _ = train_head(tiny_model, train, loss="softmax", decision="count")
    again, _ = train_head(counted, train, weight_decay=1e-3)
    assert "label_count" not in again.output_names and "labels" not in again.output_names


@pytest.mark.parametrize("kw,match", [
    ({"loss": "hinge"}, "unknown loss"),
    ({"pos_weight": "balanced", "loss": "asl"}, "bce loss only"),
    ({"cv_folds": 1}, "2 folds"),
    ({"weight_decay": "lots"}, "weight decay"),
    ({"weight_decay": -1.0}, "weight decay"),
    ({"decision": "maybe"}, "unknown decision"),
    ({"decision": "count"}, "softmax"),
])
def test_bad_settings(tiny_model, split, kw, match):
    with pytest.raises(GraphfixError, match=match):
        train_head(tiny_model, split[0], **kw)


def test_features_over_the_memory_budget_are_streamed(tiny_model, split, monkeypatch, caplog):
    """Above the budget the features live in a memory-mapped file and the same head comes out."""
    train, _ = split
    in_memory, _ = train_head(tiny_model, train, weight_decay=1e-3, cache=False)
    monkeypatch.setenv("GRAPHFIX_MEMORY_BUDGET", "1K")
    with caplog.at_level("WARNING"):
        streamed, _ = train_head(tiny_model, train, weight_decay=1e-3)
    assert "over the memory budget" in caplog.text
    assert streamed.to_bytes() == in_memory.to_bytes()
    from graphfix.data import extract_features

    cached = extract_features(tiny_model, train)  # from the cache, memory-mapped
    assert isinstance(cached, np.memmap) and cached.shape == (len(train), 8)


def test_tiny_training_set_uses_a_stated_default():
    xs, y = _problem(7, n=5)
    fit = fit_head(xs.astype(np.float32), y, TrainConfig())
    assert fit.history["selected_by"].startswith("default (5 samples") and fit.history["converged"]


def test_auto_loss_compares_every_loss_and_keeps_the_best():
    """loss="auto": one row per loss, each the best point of its own CV path; the kept loss is the
    first within one standard error of the top score, and the final head equals that loss forced
    at that lambda."""
    xs, y = _problem(5, n=300)
    x = xs.astype(np.float32)
    auto = fit_head(x, y, TrainConfig(count=True))
    h = auto.history
    rows = {r["loss"]: r for r in h["losses"]}
    assert list(rows) == ["bce", "bce-balanced", "asl", "softmax", "squared"]
    top = max(rows.values(), key=lambda r: r["score"])
    # the one-standard-error rule: the first loss within top - spread / sqrt(3) is kept
    best = next(r for r in rows.values() if r["score"] >= top["score"] - top["spread"] / np.sqrt(3))
    assert best["chosen"] and sum(r["chosen"] for r in rows.values()) == 1
    assert h["candidate"] == best["loss"] and h["weight_decay"] == best["weight_decay"]
    for name, r in rows.items():
        points = [c["score"] for c in r["curve"]]
        assert r["score"] == max(points) and r["spread"] >= 0
        assert r["weight_decay"] == r["curve"][int(np.argmax(points))]["weight_decay"]
    forced = {"bce": {"loss": "bce"}, "bce-balanced": {"loss": "bce", "pos_weight": "balanced"},
              "asl": {"loss": "asl"}, "softmax": {"loss": "softmax", "count": True}, "squared": {"loss": "squared"}}
    for name in ("bce", best["loss"]):  # a forced loss runs the same folds and path
        one = fit_head(x, y, TrainConfig(**forced[name]))
        assert one.history["cv"] == rows[name]["curve"]
        if name == best["loss"]:
            np.testing.assert_array_equal(one.weight, auto.weight)
    assert auto.oof_scores.shape == y.shape and h["folds"]["method"] == "iterative stratification"
    assert h["folds"]["labels_with_fewer_positives_than_folds"] == [y.shape[1] - 1]  # the class with 2 positives


def test_cv_metric_chooses_by_that_score():
    xs, y = _problem(6, n=300)
    fit = fit_head(xs.astype(np.float32), y, TrainConfig(loss="bce", cv_metric="macro-f1"))
    h = fit.history
    assert h["selected_by"] == "3-fold CV macro-F1"
    assert all(0 < c["score"] <= 1 for c in h["cv"])
    assert h["weight_decay"] == max(h["cv"], key=lambda c: c["score"])["weight_decay"]


def test_per_class_l2_picks_each_labels_best_point():
    """--l2 per-class: each label's lambda maximises its own mean fold AP on the shared path; the
    label missing from a fold keeps the shared lambda; the head equals a solve at those lambdas."""
    xs, y = _problem(7, n=300)
    x = xs.astype(np.float32)
    shared = fit_head(x, y, TrainConfig(loss="bce"))
    per = fit_head(x, y, TrainConfig(loss="bce", l2="per-class"))
    info = per.history["l2"]
    assert per.history["cv"] == shared.history["cv"]  # the same folds and path
    assert info["shared"] == [y.shape[1] - 1] and info["weight_decay"][-1] == shared.history["weight_decay"]
    assert set(info["weight_decay"]) <= set(LAMBDA_GRID[: len(shared.history["cv"])])
    assert info["score"] >= max(c["score"] for c in shared.history["cv"]) - 1e-12  # each label at its best
    problem = Problem(x, y, make_loss("bce", y), Standardization.of(x))
    ref = solve(problem, np.array(info["weight_decay"]), gtol=1e-6)
    w = ref.theta[:-1] / problem.stats.std[:, None]
    np.testing.assert_allclose(per.weight.T, w, atol=1e-4)


def test_losses_compared_on_a_subsample_choose_as_the_full_comparison():
    """Many rows: the losses are compared on a stratified subsample and only the winner's path runs
    on all rows. Tolerance: the loss the subsample picks scores, in the comparison on all rows,
    within 0.005 of the best there (here bce, balanced bce and asl tie within 0.0005; softmax is
    0.18 behind and never picked); its lambda is chosen again on all rows."""
    xs, y = _problem(11, n=900, n_feat=16, n_cls=5)
    x = xs.astype(np.float32)
    full = fit_head(x, y, TrainConfig(count=True, compare_rows=0))
    fast = fit_head(x, y, TrainConfig(count=True, compare_rows=300))
    assert "compared_on" not in full.history
    assert fast.history["compared_on"] == {"rows": 300, "of": 900, "method": "stratified subsample"}
    on_all = {r["loss"]: r for r in full.history["losses"]}
    picked = fast.history["candidate"]
    assert picked != "softmax" and on_all[picked]["score"] >= max(r["score"] for r in on_all.values()) - 0.005
    rows = {r["loss"]: r for r in fast.history["losses"]}
    assert list(rows) == ["bce", "bce-balanced", "asl", "softmax", "squared"] and rows[picked]["chosen"]
    # on all rows the path starts one step stronger than the subsample's best, warm from there
    start = LAMBDA_GRID.index(rows[picked]["weight_decay"]) - 1
    lams = [c["weight_decay"] for c in fast.history["cv"]]
    assert lams == list(LAMBDA_GRID[start : start + len(lams)])
    assert fast.history["weight_decay"] == on_all[picked]["weight_decay"]
    same = {c["weight_decay"]: c["score"] for c in on_all[picked]["curve"]}
    for c in fast.history["cv"]:  # the same points as that loss's path on all rows, to the CV tolerance
        if c["weight_decay"] in same:
            assert abs(c["score"] - same[c["weight_decay"]]) <= 1e-3
    assert fast.oof_scores.shape == y.shape and (fast.oof_scores > 0).all()  # every row scored out of fold
    one = fit_head(x, y, TrainConfig(loss="bce", compare_rows=300))  # one loss: nothing to compare, all rows
    assert "compared_on" not in one.history


def test_float32_passes_match_float64():
    """The CV solves' float32 passes: objective, gradient and preconditioned gradient within float32
    rounding of float64."""
    xs, y = _problem(12, n=500)
    x = (xs * np.geomspace(0.01, 100, xs.shape[1])).astype(np.float32)  # spread scales
    stats = Standardization.of(x)
    theta = np.random.default_rng(0).standard_normal((x.shape[1] + 1, y.shape[1])) * 0.3
    cols = np.arange(y.shape[1])
    f64, g64 = Problem(x, y, make_loss("asl", y), stats).value_grad(theta, cols, 1e-2)
    f32, g32 = Problem(x, y, make_loss("asl", y), stats, dtype=np.float32).value_grad(theta, cols, 1e-2)
    np.testing.assert_allclose(f32, f64, rtol=1e-6)
    np.testing.assert_allclose(g32, g64, rtol=0, atol=1e-6 * np.abs(g64).max())
    p64 = Problem(x, y, make_loss("asl", y), stats).precondition(g64, cols, 1e-2)
    p32 = Problem(x, y, make_loss("asl", y), stats, dtype=np.float32).precondition(g64, cols, 1e-2)
    np.testing.assert_allclose(p32, p64, rtol=0, atol=1e-5 * np.abs(p64).max())


def test_oof_scores_are_the_cv_scores_of_the_chosen_head():
    """`oof_scores` (what calibrate uses) solves the same folds at the chosen lambda from a cold
    start: the same scores as the path's out-of-fold scores, to the CV tolerance."""
    from graphfix.train.head_fit import oof_scores

    xs, y = _problem(13, n=300)
    x = xs.astype(np.float32)
    fit = fit_head(x, y, TrainConfig(loss="bce"))
    again = oof_scores(x, y, TrainConfig(loss="bce"), fit.history["weight_decay"])
    assert again.shape == y.shape and again.dtype == np.float32
    np.testing.assert_allclose(again, fit.oof_scores, atol=2e-3)
    with pytest.raises(GraphfixError, match="one loss"):
        oof_scores(x, y, TrainConfig(), 1e-2)


def test_loss_table_names_the_subsample():
    from graphfix.commands.train_head import loss_table

    s = {"selected_by": "3-fold CV mAP", "compared_on": {"rows": 9999, "of": 50000, "method": "stratified subsample"},
         "losses": [{"loss": "bce", "weight_decay": 0.01, "score": 0.81234, "spread": 0.0101, "chosen": True},
                    {"loss": "softmax", "weight_decay": 0.1, "score": 0.7, "spread": 0.02, "chosen": False}]}
    assert loss_table(s) == [
        "losses compared on a stratified subsample of 9999 of 50000 rows (3-fold CV mAP +- fold spread, each at its best lambda):",
        "  bce           lambda 0.01      0.8123 +- 0.0101  <- chosen",
        "  softmax       lambda 0.1       0.7000 +- 0.0200",
        "  (the chosen loss's lambda was then chosen again on all rows: above)",
    ]
    assert loss_table({**s, "compared_on": None})[0] == "losses compared (3-fold CV mAP +- fold spread, each at its best lambda):"
