"""The public names of graphfix.calibrate exist and are documented; its former names still answer, with a warning."""

from __future__ import annotations

import inspect

import pytest

import graphfix.calibrate as cal
import graphfix.data
import graphfix.metrics
import graphfix.train


def test_all_names_exist_and_have_docs():
    for name in cal.__all__:
        obj = getattr(cal, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__doc__, name


def test_signatures():
    assert list(inspect.signature(graphfix.train.train_head).parameters)[:3] == ["model", "train_set", "val_set"]
    assert list(inspect.signature(cal.fit_thresholds).parameters)[:3] == ["model", "heldout_set", "objective"]
    assert list(inspect.signature(cal.apply_thresholds).parameters)[:3] == ["model", "thresholds", "labels_output"]


@pytest.mark.parametrize("name, home", [
    ("train_head", graphfix.train), ("Dataset", graphfix.data), ("Preprocess", graphfix.data),
    ("load_dataset", graphfix.data), ("as_dataset", graphfix.data), ("model_scores", graphfix.data),
    ("extract_features", graphfix.data), ("feature_model", graphfix.data), ("save_features", graphfix.data),
])
def test_moved_names_still_answer_with_a_deprecation_warning(name, home):
    with pytest.warns(DeprecationWarning, match=f"graphfix.calibrate.{name} moved to {home.__name__}.{name}"):
        assert getattr(cal, name) is getattr(home, name)


def test_metrics_module_still_answers():
    with pytest.warns(DeprecationWarning, match="moved to graphfix.metrics"):
        from graphfix.calibrate import metrics
    assert metrics is graphfix.metrics
