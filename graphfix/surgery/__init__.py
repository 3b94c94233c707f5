"""Head finding and head replacement."""

from __future__ import annotations

__all__ = ["Head", "find_head", "swap_head", "head_gemm", "resolve_labels", "parse_labels_arg"]

from graphfix.surgery.head import Head, find_head
from graphfix.surgery.labels import parse_labels_arg, resolve_labels
from graphfix.surgery.swap import head_gemm, swap_head
