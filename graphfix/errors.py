"""The one user-facing error type of graphfix and its kinds.

A `GraphfixError` is a user mistake or a job that ran and failed; the CLI prints it as one line
(`graphfix: error: FILE: node NAME (Op): what is wrong`) and exits with the kind's code. Anything
else raised inside graphfix is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["GraphfixError", "EXIT_CODES"]

import os

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
