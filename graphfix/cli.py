"""The `graphfix` command: a thin layer over the public API.

Each subcommand lives in `graphfix/commands/<name>.py` with `add_arguments(parser)` and
`run(args) -> int`; its module docstring is the help text. A subcommand whose module cannot be
imported (a missing optional dependency) is still listed and explains the import error.
Errors: one line on stderr, `graphfix: error: FILE: what is wrong`; exit 2 for bad input or usage,
1 for a job that ran and failed.
"""

from __future__ import annotations

__all__ = ["main", "COMMANDS"]

import argparse
import importlib
import json
import os
import signal
import sys

from graphfix._version import __version__
from graphfix.errors import GraphfixError
from graphfix.progress import set_enabled

#: Subcommand name -> module. The order is the order of `graphfix --help`.
COMMANDS: dict[str, str] = {
    "inspect": "graphfix.commands.inspect",
    "convert": "graphfix.commands.convert",
    "swap-head": "graphfix.commands.swap_head",
    "train-head": "graphfix.commands.train_head",
    "calibrate": "graphfix.commands.calibrate",
    "export": "graphfix.commands.export",
    "check": "graphfix.commands.check",
    "predict": "graphfix.commands.predict",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"graphfix: error: {message} (see `{self.prog} --help`)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="graphfix", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"graphfix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # not built yet
            p = sub.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(_missing=f"{name} needs {exc.name}: pip install 'graphfix[train]' or see README")
            continue
        doc = (module.__doc__ or name).strip()
        p = sub.add_parser(
            name, help=doc.splitlines()[0], description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _interrupt(signum, frame):  # SIGTERM -> the same clean-up path as Ctrl-C
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    signal.signal(signal.SIGTERM, _interrupt)
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "_missing", None):
        print(f"graphfix: error: {args._missing}", file=sys.stderr)
        return 2
    if getattr(args, "json", False) or getattr(args, "quiet", False):
        set_enabled(False)
    try:
        return int(args._run(args) or 0)
    except GraphfixError as exc:
        print(f"graphfix: error: {exc.one_line()}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "command": args.command, "error": exc.to_dict()}, indent=2))
        return exc.exit_code
    except KeyboardInterrupt:
        print("graphfix: error: interrupted; no output written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`graphfix inspect ... | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
