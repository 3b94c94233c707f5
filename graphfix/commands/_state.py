"""A model's head state as the commands say it: one warning line on stderr, a `head_state` JSON field.

`graphfix.model.head_state` decides the state from the model's metadata; `export`, `check` and
`predict` call `warn_head_state` so that all three say the same thing the same way.
Imported when a command runs (it loads graphfix.model).
"""

from __future__ import annotations

__all__ = ["state_warning", "warn_head_state"]

import argparse
import sys
from typing import Any

from graphfix.model import head_state


def state_warning(metadata: dict[str, Any]) -> str | None:
    """The warning for an untrained head, or a trained one that decides by thresholds it does not
    have (no calibration, no top-k/count rule); None when there is nothing to say."""
    state = head_state(metadata)
    if state == "untrained":
        return ("the head is untrained (swap-head's random weights, no graphfix.training): "
                "its labels mean nothing; run `graphfix train-head` first")
    decision = (metadata.get("training") or {}).get("decision") or "thresholds"
    if state == "trained" and decision == "thresholds":
        return "the head is not calibrated (no thresholds stored): labels use 0.5; run `graphfix calibrate`"
    return None


def warn_head_state(args: argparse.Namespace, path: str | None, metadata: dict[str, Any]) -> str | None:
    """Print `state_warning` as one `graphfix: warning:` line (not under -q); return the state
    ("untrained" | "trained" | "calibrated" | None for no graphfix head) for the JSON document."""
    message = state_warning(metadata)
    if message and not getattr(args, "quiet", False):
        where = f"{path}: " if path else ""
        print(f"graphfix: warning: {where}{message}", file=sys.stderr)
    return head_state(metadata)
