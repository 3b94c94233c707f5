"""The one place graphfix connects to Ray.

`init_ray(None)` starts a local Ray with the machine's CPUs and no dashboard; `init_ray("auto")` or an
address (`host:port`, `ray://...`) joins a cluster. Ray is the optional extra `graphfix[ray]`: without
it, `--ray` is a one-line usage error. Nothing imports ray until `init_ray` is called.

Ray's own log output is kept off the terminal unless GRAPHFIX_VERBOSE=1 (`-v`): its Python
loggers (the "Token authentication is enabled" notice) are set to ERROR, and its C++ core
(`[... E ...] core_worker.cc: ...` lines) to fatal through RAY_BACKEND_LOG_LEVEL, unless the
user set that variable, and what Ray writes on stderr while it starts (among it the C++ line that
reports that level) goes to /dev/null. Failures still surface: as exceptions graphfix turns into one-line
errors, and the cluster's error messages as `graphfix: ray:` lines on stderr.
"""

from __future__ import annotations

__all__ = ["init_ray", "import_ray", "first_line", "quiet_ray_logs", "MISSING_RAY"]

import importlib
import logging
import os
import re
import contextlib
import socket
import sys
import types
from typing import Iterator

from graphfix.errors import GraphfixError

#: The message for `--ray` without the extra installed.
MISSING_RAY = "--ray needs Ray: pip install 'graphfix[ray]'"


def import_ray() -> types.ModuleType:
    """Import and return `ray`, or raise the one-line missing-extra error (exit 2)."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise GraphfixError(MISSING_RAY, kind="usage") from None


def first_line(text: str, *, sentence: bool = False, limit: int | None = 300) -> str:
    """The first non-empty line of a Ray message or error text, colour codes removed (with
    `sentence`, only its first sentence), cut at `limit` characters; "" when there is none."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    if sentence:
        line = line.split(". ")[0].rstrip(".")
    return line[:limit] if limit else line


def _errors_to_stderr() -> None:
    """Ray prints the cluster's error messages (a worker died, a task is retried) on the driver's
    stdout, several lines each; print the first sentence of each as one `graphfix: ray:` line on
    stderr instead, so stdout keeps only graphfix's own output (--json)."""
    try:
        from ray._private import worker
    except ImportError:  # a Ray without that module: nothing to move
        return
    if getattr(getattr(worker, "print_to_stdstream", None), "_graphfix", False):
        return

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        for line in data.get("lines", []):
            text = first_line(str(line), sentence=True, limit=None)
            if text:
                sys.stderr.write(f"graphfix: ray: {text}\n")

    to_stderr._graphfix = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def quiet_ray_logs() -> bool:
    """Keep Ray's log output off the terminal (see the module docstring) unless GRAPHFIX_VERBOSE=1;
    call before `ray.init` (the C++ level is read when Ray starts). Returns True when it did."""
    if os.environ.get("GRAPHFIX_VERBOSE") == "1":
        return False
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    logging.getLogger("ray").setLevel(logging.ERROR)
    return True


@contextlib.contextmanager
def _stderr_off(off: bool) -> Iterator[None]:
    """Point file descriptor 2 at /dev/null inside the block when `off` (native code writes there
    directly, past sys.stderr)."""
    if not off:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _probe(address: str | None, timeout: float = 5.0) -> None:
    """Refuse at once a `host:port` (or `ray://host:port`) where nothing listens: `ray.init` would
    retry for minutes, printing native warnings."""
    if address in (None, "local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # let Ray judge the form
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise GraphfixError(f"cannot start or join Ray at {address}: nothing answers at {host}:{port} "
                            f"({exc.strerror or type(exc).__name__})", kind="bad_input") from None


def init_ray(address: str | None) -> types.ModuleType:
    """Connect to Ray and return the `ray` module.

    Args:
        address: None (or "local") starts a local Ray with `os.cpu_count()` CPUs and no dashboard;
            "auto", "host:port" or "ray://..." joins an existing cluster.

    Raises:
        GraphfixError: Ray is not installed (usage), or the cluster cannot be reached (bad_input).
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    _probe(address)
    quiet = quiet_ray_logs()
    _errors_to_stderr()
    try:
        with _stderr_off(quiet):
            if address in (None, "local"):
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or "local"
        raise GraphfixError(f"cannot start or join Ray at {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                            kind="bad_input") from None
    return ray
