"""graphfix.scale.ray_runtime: the missing-extra error and the --ray option (no Ray needed)."""

from __future__ import annotations

import argparse
import sys

import pytest

from graphfix.commands._options import add_ray_arg
from graphfix.errors import GraphfixError
from graphfix.scale import MISSING_RAY, init_ray


def test_add_ray_arg_forms():
    p = argparse.ArgumentParser()
    add_ray_arg(p)
    assert p.parse_args([]).ray is None
    assert p.parse_args(["--ray"]).ray == "local"
    assert p.parse_args(["--ray", "auto"]).ray == "auto"
    assert p.parse_args(["--ray", "10.0.0.1:6379"]).ray == "10.0.0.1:6379"


def test_init_ray_without_ray_is_one_line_usage_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(GraphfixError) as e:
        init_ray(None)
    assert e.value.kind == "usage" and e.value.exit_code == 2
    assert e.value.one_line() == MISSING_RAY == "--ray needs Ray: pip install 'graphfix[ray]'"
