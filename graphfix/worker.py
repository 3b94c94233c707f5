"""Long-lived worker processes that run many graphfix commands each, paying the imports once.

The parent side is `Worker`: a child `python -m graphfix.worker` in its own session, spoken to in
JSON lines. The child imports graphfix's converters once, says it is ready, then for each request
`{"argv": [...]}` runs `graphfix.cli.main(argv)` in-process with stdout and stderr captured and
answers `{"rc", "stdout", "stderr", "rss_mb"}`; EOF on its stdin ends it. The answers travel on a
duplicate of the child's original stdout, and its file descriptor 1 is pointed at stderr, so
nothing a native library prints can corrupt them.

A crash (a signal, `os._exit`) or a hang ends only that child: the parent sees EOF or its
deadline, kills the child's whole process group and starts a new one for the next request.
`run_argv` is the same call without a process around it (Ray tasks use it).
"""

from __future__ import annotations

__all__ = ["Worker", "WorkerDied", "WorkerTimeout", "run_argv", "serve"]

import contextlib
import io
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

#: Modules a worker imports before it says it is ready (what every convert needs).
PRELOAD = ("graphfix.commands.convert", "graphfix.convert", "graphfix.convert.clean", "graphfix.model", "onnxruntime")


class WorkerDied(Exception):
    """The child ended without an answer; `returncode` is its exit status (negative: a signal)."""

    def __init__(self, returncode: int | None, detail: str) -> None:
        super().__init__(detail)
        self.returncode = returncode
        self.detail = detail


class WorkerTimeout(Exception):
    """No answer before the deadline; the child has been stopped."""


def _rss_mb() -> float:
    """This process's resident memory now (not its peak), in MB."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):  # not Linux: the peak is the best there is
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def run_argv(argv: list[str]) -> dict[str, Any]:
    """Run `graphfix ARGV` in this process; its exit status and what it printed."""
    from graphfix.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            rc = exc.code if isinstance(exc.code, int) else 2
        except Exception:  # a bug: the traceback, as a fresh process would print it
            traceback.print_exc()
            rc = 1
    return {"rc": int(rc), "stdout": out.getvalue(), "stderr": err.getvalue()}


def serve() -> int:
    """The child's loop (`python -m graphfix.worker`)."""
    import faulthandler
    import gc
    import importlib

    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # native prints go to stderr, never into the answers
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 - lives as long as the process
    faulthandler.enable()  # a crash leaves "Fatal Python error: ..." on stderr
    for name in PRELOAD:
        importlib.import_module(name)
    gc.freeze()  # the imported modules live for good: collections skip them (a full one costs ~60 ms)
    answers.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    answers.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = run_argv(json.loads(line)["argv"])
        reply["rss_mb"] = round(_rss_mb(), 1)
        answers.write(json.dumps(reply) + "\n")
        answers.flush()
        if reply["rc"] >= 128:  # interrupted by a signal (a timeout's SIGTERM): end here
            return reply["rc"]
    return 0


class Worker:
    """One child process: started here, `ready()` waits for its imports, `call()` runs a command.

    Args:
        tag: Words added to the child's command line, so that `ps` shows what it works for.
    """

    def __init__(self, tag: list[str] | None = None) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - the child's stderr, read after a crash
        cmd = [sys.executable, "-m", "graphfix.worker", *(tag or [])]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.calls = 0
        self.rss_mb = 0.0
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)

    def ready(self, timeout: float = 120) -> None:
        """Wait until the child has imported what it needs (WorkerDied / WorkerTimeout if not)."""
        self._read(timeout)

    def call(self, argv: list[str], timeout: float) -> dict[str, Any]:
        """Run `graphfix ARGV` in the child: its answer, or WorkerDied / WorkerTimeout."""
        mark = self._log.seek(0, os.SEEK_END)
        self.calls += 1
        try:
            self.proc.stdin.write((json.dumps({"argv": argv}) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            self._died(mark)
        reply = self._read(timeout, mark)
        self.rss_mb = float(reply.get("rss_mb", 0.0))
        return reply

    def _read(self, timeout: float, mark: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop(grace=5)
                raise WorkerTimeout(f"no result after {timeout:g} s")
            if not self._selector.select(left):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                self._died(mark)
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _died(self, mark: int) -> None:
        returncode = self.proc.wait()
        self._log.seek(mark)
        lines = [ln.strip() for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        fatal = next((ln for ln in lines if ln.startswith("Fatal Python error")), lines[-1] if lines else "")
        self.close()
        raise WorkerDied(returncode, fatal[:300])

    def stop(self, grace: float = 0.0) -> None:
        """SIGTERM the child's process group (after `grace` s: SIGKILL), then wait for it."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGTERM if grace else signal.SIGKILL)
            try:
                self.proc.wait(timeout=grace or None)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        self.close()

    def kill(self) -> None:
        """SIGKILL the child's whole process group now (safe from another thread)."""
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """End the child (EOF on its stdin; SIGKILL if it lingers) and free the pipes."""
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(self.proc.stdout)
        self._selector.close()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()
        self._log.close()


if __name__ == "__main__":
    sys.exit(serve())
