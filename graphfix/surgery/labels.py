"""Label lists for the new head: from a count, a list, or a file of names; and old-class maps."""

from __future__ import annotations

__all__ = ["MAX_LABELS", "resolve_labels", "parse_labels_arg", "read_init_map"]

import json
import os
import re
from pathlib import Path

from graphfix.data.datasets import label_name_problems, problems_error
from graphfix.errors import GraphfixError

#: Upper bound on the label count (a [L, F] weight is allocated from it).
MAX_LABELS = 100_000


def _default_names(count: int) -> list[str]:
    width = len(str(count - 1))
    return [f"label_{i:0{width}d}" for i in range(count)]


def resolve_labels(labels: int | list[str] | tuple[str, ...], label_names: list[str] | None = None) -> list[str]:
    """Validate `labels` (a count or names) and return the list of L label names.

    Raises:
        GraphfixError: kind "usage" for a non-positive or huge count, empty or duplicated names.
    """
    if isinstance(labels, bool):
        raise GraphfixError("labels must be a positive count or a list of names", kind="usage")
    if isinstance(labels, int):
        if labels <= 0:
            raise GraphfixError(f"--labels {labels}: the label count must be positive", kind="usage")
        if labels > MAX_LABELS:
            raise GraphfixError(f"--labels {labels}: more than {MAX_LABELS} labels", kind="usage")
        if label_names is not None:
            if len(label_names) != labels:
                raise GraphfixError(
                    f"{len(label_names)} label names given for {labels} labels", kind="usage"
                )
            return resolve_labels(list(label_names))
        return _default_names(labels)
    names = [str(n).strip() for n in labels]
    if not names:
        raise GraphfixError("the label list is empty", kind="usage")
    if len(names) > MAX_LABELS:
        raise GraphfixError(f"more than {MAX_LABELS} labels", kind="usage")
    problems = label_name_problems(names)
    if problems:
        raise problems_error(problems, None, "bad label name", kind="usage")
    return names


def parse_labels_arg(value: str) -> list[str]:
    """CLI `--labels N|FILE`: a positive count, or a UTF-8 file (a BOM is dropped) with one label
    name per line (blank lines and `#` comments skipped); bad names are refused with their lines."""
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return resolve_labels(int(text))
    path = Path(value)
    if not path.is_file():
        raise GraphfixError(
            f"--labels {value!r} is neither a positive count nor an existing file of label names",
            kind="usage",
        )
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphfixError(f"cannot read label file ({exc})", kind="usage", path=path) from exc
    numbered = [(i, ln.strip()) for i, ln in enumerate(lines, 1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not numbered:
        raise GraphfixError("label file has no label names", kind="usage", path=path)
    problems = label_name_problems([n for _, n in numbered], [f"line {i}" for i, _ in numbered])
    if problems:
        raise problems_error(problems, path, "bad label name", kind="usage")
    try:
        return resolve_labels([n for _, n in numbered])
    except GraphfixError as exc:
        raise exc.with_path(path)


def read_init_map(source: str | os.PathLike | dict, labels: list[str], num_classes: int) -> dict[int, int]:
    """Map new label index -> old class index, from a dict or a file.

    The file is JSON (`{"cat": 281, "dog": 151}`) or text lines `NAME INDEX` (separated by
    whitespace, ',', ':' or '='). Keys are label names, or label indices as strings.
    """
    path = None
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise GraphfixError("no such file", kind="usage", path=path)
        text = path.read_text(encoding="utf-8")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            raw = {}
            for i, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = re.split(r"\s*[,:=]\s*|\s+", line, maxsplit=1)
                if len(parts) != 2:
                    raise GraphfixError(f"line {i}: expected NAME INDEX", kind="usage", path=path)
                raw[parts[0]] = parts[1]
        if not isinstance(raw, dict):
            raise GraphfixError("init map must be a JSON object {label: old_index}", kind="usage", path=path)
    index = {name: i for i, name in enumerate(labels)}
    out: dict[int, int] = {}
    for key, old in raw.items():
        key = str(key)
        new = index.get(key, int(key) if key.isdigit() and int(key) < len(labels) else None)
        if new is None:
            raise GraphfixError(f"init map names unknown label {key!r}", kind="usage", path=path)
        try:
            old_i = int(old)
        except (TypeError, ValueError):
            raise GraphfixError(f"init map: {key!r} -> {old!r} is not a class index", kind="usage", path=path) from None
        if not 0 <= old_i < num_classes:
            raise GraphfixError(
                f"init map: {key!r} -> {old_i} is outside the old classifier's 0..{num_classes - 1}",
                kind="usage", path=path,
            )
        out[new] = old_i
    return out
