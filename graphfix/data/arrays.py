"""Large arrays within a memory budget: in memory below it, memory-mapped files above it.

Used for backbone features (`graphfix.data.features`) and for arrays read back from shard
folders (`graphfix.data.shards`).
"""

from __future__ import annotations

__all__ = ["memory_budget", "over_budget", "allocate"]

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)


def memory_budget() -> int:
    """Bytes of features kept in memory: `$GRAPHFIX_MEMORY_BUDGET` (bytes, or with a K/M/G suffix),
    else half of the machine's memory."""
    text = os.environ.get("GRAPHFIX_MEMORY_BUDGET", "").strip().upper()
    if text:
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
        try:
            return int(float(text.rstrip("KMG")) * scale)
        except ValueError as exc:
            raise GraphfixError(f"GRAPHFIX_MEMORY_BUDGET={text!r}: a byte count such as 8G", kind="usage") from exc
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 8 << 30


def over_budget(nbytes: int, budget: int | None = None) -> bool:
    """True when `nbytes` is over `budget` (default `memory_budget()`)."""
    return nbytes > (memory_budget() if budget is None else budget)


def allocate(shape: tuple[int, ...], target: Path | None, dtype: np.dtype = np.float32,
             budget: int | None = None) -> tuple[np.ndarray, str | None]:
    """An empty array of `shape`; above the memory budget (or what is left of it: `budget`) a
    memory-mapped file (kept beside `target` and its name returned, or, with no target,
    unlinked at once)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if not over_budget(nbytes, budget):
        return np.empty(shape, dtype), None
    folder = target.parent if target is not None else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".features.", suffix=".npy", dir=folder)
    os.close(fd)
    logger.warning("features (%.1f GB) are over the memory budget (%.1f GB): streaming them from %s",
                   nbytes / 1e9, memory_budget() / 1e9, tmp)
    feats = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    if target is None:  # nothing to keep: the mapping outlives the name
        os.unlink(tmp)
        return feats, None
    return feats, tmp
