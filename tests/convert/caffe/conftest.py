"""Puts this folder on sys.path so the Caffe tests can `import caffe_helpers`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from caffe_helpers import fixture_dir  # noqa: E402,F401  (a session fixture)
