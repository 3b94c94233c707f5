"""The least-squares head (loss "squared"): exact ridge regression, Platt scaling, its place in --loss auto."""

from __future__ import annotations

import numpy as np
import pytest

from graphfix.errors import GraphfixError
from graphfix.train.head_fit import TrainConfig, fit_head, oof_scores
from graphfix.train.losses import platt, platt_fit


def _problem(seed: int, n: int = 300, n_feat: int = 10, n_cls: int = 3):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, n_feat)) @ rng.standard_normal((n_feat, n_feat))) * rng.uniform(0.1, 10, n_feat)
    x[:, 1] = 2.5  # a constant column
    z = x @ rng.standard_normal((n_feat, n_cls)) / 5 + rng.standard_normal((n, n_cls))
    y = (z > np.quantile(z, 0.75, axis=0)).astype(np.uint8)
    return x.astype(np.float32), y


def _unscaled(fit):
    """The least-squares weights and bias before the Platt scaling folded into them."""
    a, c = np.array(fit.history["platt"]["a"]), np.array(fit.history["platt"]["c"])
    return fit.weight.astype(np.float64) / a[:, None], (fit.bias.astype(np.float64) - c) / a


@pytest.mark.parametrize("seed,lam", [(0, 1e-3), (1, 0.1), (2, 3.0)])
def test_squared_equals_sklearn_ridge(seed, lam):
    """At a fixed lambda the head is scikit-learn's Ridge on standardised features (alpha = lambda N),
    folded back onto the raw features."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    x, y = _problem(seed)
    fit = fit_head(x, y, TrainConfig(loss="squared", weight_decay=lam, tol=1e-12))
    assert fit.history["converged"] and fit.history["iterations"] <= 3  # the preconditioner is the exact inverse Hessian
    x64 = x.astype(np.float64)
    scaler = StandardScaler().fit(x64)
    ref = Ridge(alpha=lam * len(x), solver="cholesky").fit(scaler.transform(x64), y)
    w_ref = ref.coef_ / scaler.scale_
    w_ref[:, 1] = 0.0  # graphfix never weights a constant feature
    b_ref = ref.intercept_ - w_ref @ scaler.mean_
    w, b = _unscaled(fit)
    dw = np.abs(w - w_ref).max()
    assert dw <= 1e-6 * max(1.0, np.abs(w_ref).max()), f"max abs weight diff {dw:.3g}"
    assert np.abs(b - b_ref).max() <= 1e-5, f"max abs bias diff {np.abs(b - b_ref).max():.3g}"
    assert fit.history["platt"]["fitted_on"] == "training"  # no CV at a fixed lambda


def test_platt_fit_equals_sklearn_on_the_smoothed_targets():
    """Platt scaling is an unregularised 1-D logistic regression on Platt's smoothed targets:
    scikit-learn on rows weighted by the target and its complement gives the same (a, c)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    y = (rng.random((400, 3)) < [0.1, 0.3, 0.5]).astype(np.uint8)
    s = y * rng.uniform(0.2, 1.0, y.shape) + rng.normal(0, 0.3, y.shape)
    a, c = platt_fit(s, y)
    for j in range(3):
        pos, neg = y[:, j].sum(), len(y) - y[:, j].sum()
        t = np.where(y[:, j] == 1, (pos + 1) / (pos + 2), 1 / (neg + 2))
        xx = np.concatenate([s[:, j], s[:, j]])[:, None]
        yy = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
        ref = LogisticRegression(penalty=None, tol=1e-12, max_iter=10000).fit(xx, yy, sample_weight=np.concatenate([t, 1 - t]))
        assert abs(a[j] - ref.coef_[0, 0]) <= 1e-5 * max(1.0, abs(a[j])), (j, a[j], ref.coef_[0, 0])
        assert abs(c[j] - ref.intercept_[0]) <= 1e-5 * max(1.0, abs(c[j])), (j, c[j], ref.intercept_[0])
    np.testing.assert_allclose(platt(s, a, c), 1 / (1 + np.exp(-(s * a + c))), rtol=1e-12)


def test_platt_fit_separable_and_one_sided_classes_stay_finite():
    y = np.array([[0, 0, 1], [0, 0, 1], [1, 0, 1], [1, 0, 1]], np.uint8)
    s = np.array([[0.0, 0.1, 0.2], [0.1, 0.2, 0.3], [0.9, 0.3, 0.4], [1.0, 0.4, 0.5]])
    a, c = platt_fit(s, y)
    assert np.isfinite(a).all() and np.isfinite(c).all()
    assert a[0] > 0  # separable: a finite, positive slope
    assert a[1] == 0 and a[2] == 0  # all negative / all positive: the smoothed prior
    np.testing.assert_allclose(platt(s, a, c)[:, 1], 1 / 6)  # 1 / (n- + 2)
    np.testing.assert_allclose(platt(s, a, c)[:, 2], 5 / 6)  # (n+ + 1) / (n+ + 2)


def test_cv_head_is_platt_scaled_on_its_out_of_fold_scores():
    """With CV, the Platt scaling is fitted on the out-of-fold scores at the chosen lambda; the
    returned out-of-fold scores are those, scaled; recomputing them (calibrate --oof-below) gives
    the same."""
    x, y = _problem(5)
    fit = fit_head(x, y, TrainConfig(loss="squared"))
    h = fit.history
    assert h["platt"]["fitted_on"] == "out-of-fold" and h["selected_by"] == "3-fold CV mAP"
    raw = oof_scores(x, y, TrainConfig(loss="squared", standardize=h["standardize"]), h["weight_decay"])
    a, c = platt_fit(raw, y)
    # the CV path's solves are warm-started and stop at CV_GTOL in float32; these are cold: close, not equal
    np.testing.assert_allclose(a, h["platt"]["a"], rtol=2e-3)
    np.testing.assert_allclose(fit.oof_scores, platt(raw, a, c), atol=5e-3)
    p = 1 / (1 + np.exp(-(x.astype(np.float64) @ fit.weight.T.astype(np.float64) + fit.bias)))
    assert 0.5 * y.mean() < p.mean() < 2 * y.mean()  # probabilities near the prior, not least-squares scores


def test_auto_keeps_bce_unless_another_loss_wins_by_one_standard_error():
    """The one-standard-error rule: the kept loss is the first in CANDIDATES order within
    spread / sqrt(k) of the top CV score; with validation data (one split) the top score wins."""
    x, y = _problem(6, n=400)
    fit = fit_head(x, y, TrainConfig())
    rows = fit.history["losses"]
    top = max(rows, key=lambda r: r["score"])
    kept = next(r for r in rows if r["score"] >= top["score"] - top["spread"] / np.sqrt(3))
    assert [r["loss"] for r in rows if r["chosen"]] == [kept["loss"]] == [fit.history["candidate"]]
    val = fit_head(x[:300], y[:300], TrainConfig(), x[300:], y[300:])
    vrows = val.history["losses"]
    assert val.history["candidate"] == max(vrows, key=lambda r: r["score"])["loss"]


def test_finetuning_refuses_the_squared_loss(tiny_model, make):
    from graphfix.data import Dataset
    from graphfix.train import train_head

    x, y = make(tiny_model, 60)
    ds = Dataset.from_arrays(x, y, tiny_model.labels)
    with pytest.raises(GraphfixError, match="--train-from trains the bce and asl losses \\(not squared\\)"):
        train_head(tiny_model, ds, loss="squared", train_from="-1")


def _scale_problem(signal_scale: float, noise_scale: float, seed: int = 7, n: int = 240):
    """4 informative features at `signal_scale`, 60 noise features at `noise_scale`."""
    rng = np.random.default_rng(seed)
    sig = rng.standard_normal((n, 4))
    noise = rng.standard_normal((n, 60))
    z = sig @ rng.standard_normal((4, 3)) + 0.5 * rng.standard_normal((n, 3))
    y = (z > np.quantile(z, 0.7, axis=0)).astype(np.uint8)
    return np.hstack([sig * signal_scale, noise * noise_scale]).astype(np.float32), y


@pytest.mark.parametrize("seed,lam", [(0, 0.01), (1, 1.0)])
def test_global_scale_equals_sklearn_on_one_std(seed, lam):
    """standardize="global": centred features divided by one std (the root mean of the
    non-constant features' variances); bce at a fixed lambda equals scikit-learn there."""
    from sklearn.linear_model import LogisticRegression

    x, y = _problem(seed)
    fit = fit_head(x, y, TrainConfig(loss="bce", weight_decay=lam, standardize="global", tol=1e-10))
    assert fit.history["standardize"] == "global" and "scale_choice" not in fit.history
    x64 = x.astype(np.float64)
    var = x64.var(axis=0)
    s = np.sqrt(var[var > 1e-9].mean())
    xs = (x64 - x64.mean(axis=0)) / s
    for j in range(y.shape[1]):
        ref = LogisticRegression(C=1 / (lam * len(x)), tol=1e-10, max_iter=100000).fit(xs, y[:, j])
        w_ref = ref.coef_[0] / s
        dw = np.abs(fit.weight[j] - w_ref).max()
        assert dw <= 1e-4 * max(1.0, np.abs(w_ref).max()), f"class {j}: max abs weight diff {dw:.3g}"


@pytest.mark.parametrize("signal,noise,expected", [(10.0, 0.1, "global"), (0.1, 10.0, "per-feature")])
def test_auto_scale_follows_the_squared_loss_cv(signal, noise, expected):
    """standardize="auto": the squared loss's CV path under each scale; global is kept only when it
    scores higher by more than one standard error. Informative features with the large variance
    make the global scale win (per-feature scaling lifts the noise to their level); with the small
    variance, per-feature scaling wins."""
    x, y = _scale_problem(signal, noise)
    fit = fit_head(x, y, TrainConfig(loss="bce"))
    choice = fit.history["scale_choice"]
    per, glob = choice["scales"]["per-feature"], choice["scales"]["global"]
    rule = "global" if glob["score"] > per["score"] + per["spread"] / np.sqrt(3) else "per-feature"
    assert choice["chosen"] == rule == fit.history["standardize"] == expected, choice
    forced = fit_head(x, y, TrainConfig(loss="bce", standardize=expected))
    np.testing.assert_array_equal(forced.weight, fit.weight)  # the same fit as naming that scale


def test_with_scale_needs_no_second_pass():
    """`Standardization.with_scale` gives the statistics `of` computes under that scale, from the
    covariance it keeps; per-feature -> global -> per-feature comes back to the same."""
    from graphfix.train.solver import Standardization

    x, _ = _scale_problem(3.0, 0.2)
    per = Standardization.of(x)
    glob = Standardization.of(x, scale="global")
    moved = per.with_scale("global")
    np.testing.assert_array_equal(moved.std, glob.std)
    np.testing.assert_allclose(moved.eigvals, glob.eigvals, rtol=1e-10, atol=1e-12)
    assert len(set(glob.std[~glob.constant].tolist())) == 1
    back = moved.with_scale("per-feature")
    np.testing.assert_array_equal(back.std, per.std)
    np.testing.assert_allclose(back.eigvals, per.eigvals, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError):
        per.with_scale("raw")
