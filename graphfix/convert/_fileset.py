"""Write a set of files so that all of them appear, or none.

Each file is written to a temp file in its destination folder; only when every writer (and the
optional check on the finished temp files) has succeeded are they renamed into place. A failure
removes the temp files and any file of the set already renamed, so no partial set is left.
This is the one place write-back puts files on disk (kept small so it can move onto a shared
output-writing path).
"""

from __future__ import annotations

__all__ = ["write_file_set"]

import contextlib
import os
import tempfile
from typing import Callable, Mapping

from graphfix.errors import GraphfixError

#: A writer gets the temp path to write; the check gets {final path: temp path}.
Writer = Callable[[str], None]


def write_file_set(
    writers: Mapping[str, Writer], check: Callable[[dict[str, str]], None] | None = None
) -> list[str]:
    """Run each `writers[path](tmp)` and rename all temps to their paths at the end.

    Returns:
        The paths written, in the order given.

    Raises:
        GraphfixError: an OSError while writing or renaming (the set is removed); errors of
            the writers and the check pass through after the temp files are removed.
    """
    temps: dict[str, str] = {}
    renamed: list[str] = []
    try:
        for path in writers:
            folder = os.path.dirname(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
            os.close(fd)
            temps[path] = tmp
        for path, write in writers.items():
            write(temps[path])
            os.chmod(temps[path], 0o644)
        if check is not None:
            check(dict(temps))
        for path, tmp in temps.items():
            os.replace(tmp, path)
            renamed.append(path)
    except OSError as exc:
        _cleanup(temps, renamed)
        where = getattr(exc, "filename", None) or next(iter(writers), None)
        raise GraphfixError(f"cannot write ({exc.strerror or exc})", kind="failed", path=where) from exc
    except BaseException:
        _cleanup(temps, renamed)
        raise
    return list(writers)


def _cleanup(temps: dict[str, str], renamed: list[str]) -> None:
    for path in renamed:
        with contextlib.suppress(OSError):
            os.unlink(path)
    for tmp in temps.values():
        with contextlib.suppress(OSError):
            os.unlink(tmp)
