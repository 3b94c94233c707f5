"""Fixtures shared with tests/data, tests/train and tests/calibrate (tests/tiny_heads.py)."""

from tests.tiny_heads import _cache_dir, build, make, tiny_model  # noqa: F401 (pytest fixtures)
