"""Scale-out on Ray: re-exports only (see ray_runtime for the connection)."""

from __future__ import annotations

__all__ = ["init_ray", "import_ray", "MISSING_RAY"]

from graphfix.scale.ray_runtime import MISSING_RAY, import_ray, init_ray
