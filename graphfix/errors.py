"""The one user-facing error type of graphfix and its kinds.

A `GraphfixError` is a user mistake or a job that ran and failed; the CLI prints it as one line
(`graphfix: error: FILE: node NAME (Op): what is wrong`) and exits with the kind's code. Anything
else raised inside graphfix is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["GraphfixError", "EXIT_CODES", "os_error", "Interrupted"]

import errno
import os
import signal

#: Exit code per error kind: 2 for bad input or usage, 1 for a job that ran and failed.
EXIT_CODES: dict[str, int] = {
    "bad_input": 2,
    "usage": 2,
    "unsupported_op": 2,
    "no_head": 2,
    "parity": 1,
    "not_ready": 1,
    "failed": 1,
}


class GraphfixError(Exception):
    """A clear, one-line error about a user's input or a failed job.

    Args:
        message: What is wrong, as one sentence.
        kind: One of `EXIT_CODES`' keys.
        path: The file the error is about, if any.
        node: The node name (and op) the error is about, if any, e.g. ``"fc1 (Gemm)"``.
        hint: An optional second sentence saying what was expected or how to fix it.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "bad_input",
        path: str | os.PathLike | None = None,
        node: str | None = None,
        hint: str | None = None,
    ) -> None:
        if kind not in EXIT_CODES:
            raise ValueError(f"unknown GraphfixError kind {kind!r}")
        self.message = message
        self.kind = kind
        self.path = os.fspath(path) if path is not None else None
        self.node = node
        self.hint = hint
        super().__init__(self.one_line())

    @property
    def exit_code(self) -> int:
        """The CLI exit status for this error."""
        return EXIT_CODES[self.kind]

    def one_line(self) -> str:
        """`FILE: node NAME: message (hint)` on one line, newlines folded."""
        parts = []
        if self.path:
            parts.append(f"{self.path}: ")
        if self.node:
            parts.append(f"node {self.node}: ")
        parts.append(self.message)
        if self.hint:
            parts.append(f" ({self.hint})")
        return " ".join("".join(parts).split())

    def with_path(self, path: str | os.PathLike) -> GraphfixError:
        """Return this error naming `path` if it names no file yet."""
        if self.path is None:
            self.path = os.fspath(path)
            self.args = (self.one_line(),)
        return self

    def to_dict(self) -> dict:
        """JSON-ready form for `--json` output."""
        return {
            "kind": self.kind,
            "message": self.message,
            "path": self.path,
            "node": self.node,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


#: errno values that mean the user's path or permissions are wrong (exit 2); others are faults (1).
_USAGE_ERRNO = frozenset(
    getattr(errno, name) for name in ("ENOENT", "ENOTDIR", "EISDIR", "EACCES", "EPERM", "EROFS", "ENAMETOOLONG", "ELOOP", "EEXIST")
)


def os_error(exc: OSError, path: str | os.PathLike | None = None) -> GraphfixError:
    """An OSError as a one-line GraphfixError naming `path` (or the error's own file name)."""
    name = path if path is not None else (exc.filename if exc.filename not in (None, "") else None)
    kind = "usage" if exc.errno in _USAGE_ERRNO else "failed"
    return GraphfixError(exc.strerror or str(exc) or type(exc).__name__, kind=kind, path=name)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the CLI cleans up and exits 128 + the signal number (130, 143)."""

    def __init__(self, signum: int = signal.SIGINT, message: str = "interrupted; no output written") -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.message = message
