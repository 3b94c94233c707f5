"""`json.dumps(..., default=jsonable)`: result objects, NumPy values, anything else as text."""

from __future__ import annotations

__all__ = ["jsonable"]

from typing import Any


def jsonable(obj: Any) -> Any:
    """A JSON-ready stand-in for `obj` (its `to_dict()`, its `tolist()`, or `str(obj)`)."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
