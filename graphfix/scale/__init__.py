"""Scale-out on Ray: re-exports only (ray_runtime: the connection; ray_fleet: `convert --ray`)."""

from __future__ import annotations

__all__ = ["init_ray", "import_ray", "MISSING_RAY", "run_ray_fleet", "check_shared_fs"]

from graphfix.scale.ray_fleet import check_shared_fs, run_ray_fleet
from graphfix.scale.ray_runtime import MISSING_RAY, import_ray, init_ray
