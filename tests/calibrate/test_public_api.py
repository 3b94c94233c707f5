"""The public names of graphfix.calibrate exist and are documented."""

from __future__ import annotations

import inspect

import graphfix.calibrate as cal


def test_all_names_exist_and_have_docs():
    for name in cal.__all__:
        obj = getattr(cal, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__doc__, name


def test_signatures():
    assert list(inspect.signature(cal.train_head).parameters)[:3] == ["model", "train_set", "val_set"]
    assert list(inspect.signature(cal.fit_thresholds).parameters)[:3] == ["model", "heldout_set", "objective"]
    assert list(inspect.signature(cal.apply_thresholds).parameters)[:3] == ["model", "thresholds", "labels_output"]
