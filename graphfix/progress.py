"""Progress bars (tqdm) for work that can take more than a few seconds.

Bars go to stderr, only when it is a terminal, and never under `-q` or `--json` (the CLI calls
`set_enabled(False)`) or with GRAPHFIX_PROGRESS=0.
"""

from __future__ import annotations

__all__ = ["bar", "set_enabled", "wanted"]

import os
import sys
from typing import Any

_enabled = True


def set_enabled(flag: bool) -> None:
    """Turn progress bars on or off for this process."""
    global _enabled
    _enabled = flag


def bar(total: float | None = None, desc: str = "", unit: str = "it", show: bool | None = None, **kwargs: Any):
    """A tqdm bar (a no-op one when bars are off). `show`: an API caller's explicit choice
    (None: only when stderr is a terminal); `-q`, `--json` and GRAPHFIX_PROGRESS=0 always win."""
    from tqdm import tqdm

    off = not _enabled or os.environ.get("GRAPHFIX_PROGRESS") == "0" or not wanted(show)
    return tqdm(total=total, desc=desc, unit=unit, disable=off, leave=False, dynamic_ncols=True, **kwargs)


def wanted(progress: bool | None) -> bool:
    """An explicit `progress` flag, or (None) bars only when stderr is a terminal."""
    return bool(sys.stderr.isatty()) if progress is None else progress
