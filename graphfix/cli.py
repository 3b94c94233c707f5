"""The `graphfix` command: a thin layer over the public API.

Each subcommand lives in `graphfix/commands/<name>.py` with `add_arguments(parser)` and
`run(args) -> int`; its module docstring is the help text. A subcommand whose module cannot be
imported (a missing optional dependency) is still listed and explains the import error.
Errors: one line on stderr, `graphfix: error: FILE: what is wrong`; exit 2 for bad input or usage,
1 for a job that ran and failed. A reader that closes stdout early (`graphfix predict ... | head -1`)
ends the command quietly with exit 0. `-v` shows log messages (graphfix's info lines and
third-party ones such as Ray's), which are otherwise kept off the terminal.
"""

from __future__ import annotations

__all__ = ["main", "COMMANDS"]

import argparse
import ast
import functools
import importlib
import importlib.util
import json
import logging
import os
import select
import signal
import sys

from graphfix._version import __version__
from graphfix.errors import GraphfixError, Interrupted, os_error
from graphfix.progress import set_enabled

#: Subcommand name -> module. The order is the order of `graphfix --help`.
COMMANDS: dict[str, str] = {
    "inspect": "graphfix.commands.inspect",
    "convert": "graphfix.commands.convert",
    "swap-head": "graphfix.commands.swap_head",
    "train-head": "graphfix.commands.train_head",
    "calibrate": "graphfix.commands.calibrate",
    "features": "graphfix.commands.features",
    "export": "graphfix.commands.export",
    "check": "graphfix.commands.check",
    "predict": "graphfix.commands.predict",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"graphfix: error: {message} (see `{self.prog} --help`)\n")


@functools.lru_cache(maxsize=None)
def _summary(module_name: str) -> str:
    """A command's one-line help: its module docstring's first line, read without importing it
    (cached: a fleet worker builds the parser once per model)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin:
        return ""
    with open(spec.origin, encoding="utf-8") as fh:
        doc = ast.get_docstring(ast.parse(fh.read()), clean=True) or ""
    return doc.splitlines()[0] if doc else ""


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (its first word not starting with '-'), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def _build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser; only the chosen command's module is imported (the rest are listed by name)."""
    parser = _Parser(prog="graphfix", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"graphfix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    chosen = _chosen(argv)
    for name, module_name in COMMANDS.items():
        if name != chosen:
            sub.add_parser(name, help=_summary(module_name))
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            p = sub.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(_missing=f"{name} needs {exc.name}: pip install 'graphfix[train]' or see README")
            continue
        doc = (module.__doc__ or name).strip()
        p = sub.add_parser(
            name, help=doc.splitlines()[0], description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(p)
        p.add_argument("-v", "--verbose", action="store_true",
                       help="show log messages: graphfix's info lines and third-party ones (Ray, onnxruntime)")
        p.set_defaults(_run=module.run)
    return parser


def _interrupt(signum, frame):  # SIGINT and SIGTERM take the same clean-up path
    raise Interrupted(signum)


def _reopen_closed_std() -> None:
    """Point a closed stdin/stdout/stderr at /dev/null, so that output goes nowhere instead of
    failing, and no file the command opens takes descriptor 0, 1 or 2."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 - lives as long as the process


def _stdout_gone() -> bool:
    """True when stdout is a pipe or socket whose reader has closed it (the write end polls
    POLLERR or POLLHUP), so that a BrokenPipeError came from stdout and not from another pipe."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _set_verbose(verbose: bool, *, quiet: bool = False) -> None:
    """-v: log records at INFO and up go to stderr (without -v none do), and GRAPHFIX_VERBOSE=1 tells the places that
    silence third-party output (`graphfix.scale.ray_runtime`) and child processes to let it through."""
    ours = logging.getLogger("graphfix")
    for handler in [h for h in ours.handlers if isinstance(h, _Warnings)]:
        ours.removeHandler(handler)
    if verbose:
        os.environ["GRAPHFIX_VERBOSE"] = "1"
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
        return
    if not logging.getLogger().handlers:
        # without a handler Python prints WARNING records (a third-party library's logged
        # traceback) to stderr beside graphfix's own line
        logging.getLogger().addHandler(logging.NullHandler())
    if not quiet:  # -q: nothing but errors
        ours.addHandler(_Warnings(logging.WARNING))  # graphfix's own warnings still reach the user


class _Warnings(logging.Handler):
    """graphfix's WARNING records as `graphfix: warning: ...` lines on the current sys.stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"graphfix: warning: {record.getMessage()}\n")
        except Exception:  # a closed stderr: nothing to tell
            self.handleError(record)


def _model_path(args: argparse.Namespace) -> str | None:
    model = getattr(args, "model", None)
    return model if isinstance(model, str) else None


def _fail(exc: GraphfixError, args: argparse.Namespace | None) -> int:
    print(f"graphfix: error: {exc.one_line()}", file=sys.stderr)
    if args is not None and getattr(args, "json", False):
        print(json.dumps({"ok": False, "command": args.command, "error": exc.to_dict()}, indent=2))
    return exc.exit_code


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    _reopen_closed_std()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "_missing", None):
        print(f"graphfix: error: {args._missing}", file=sys.stderr)
        return 2
    if getattr(args, "json", False) or getattr(args, "quiet", False):
        set_enabled(False)
    _set_verbose(getattr(args, "verbose", False), quiet=bool(getattr(args, "quiet", False)))
    try:
        try:
            return int(args._run(args) or 0)
        except GraphfixError as exc:
            return _fail(exc, args)
        except BrokenPipeError as exc:
            if not _stdout_gone():  # another pipe broke: a fault like any other
                return _fail(os_error(exc), args)
            # the reader has what it wanted (`graphfix predict ... | head -1`): end quietly; what is
            # still buffered goes to /dev/null, not into an error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except OSError as exc:  # any other OS fault: one line naming the file, no traceback
            return _fail(os_error(exc), args)
        except MemoryError:
            return _fail(GraphfixError("out of memory", kind="failed", path=_model_path(args)), args)
    except KeyboardInterrupt as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the message
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        message = exc.message if isinstance(exc, Interrupted) else "interrupted; no output written"
        print(f"graphfix: error: {message}", file=sys.stderr)
        return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
