"""The registry of MXNet op converters: the only list of supported ops.

A converter is a plain function ``(node, ctx) -> list of output values`` registered under one or
more MXNet op names with `@converter`. Docs (`docs/mxnet-supported-ops.md`), `graphfix inspect`
and the unsupported-op error all read `CONVERTERS`.
"""

from __future__ import annotations

__all__ = ["Converter", "CONVERTERS", "converter", "supported_ops", "ops_markdown", "load_all"]

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Converter:
    """A registered converter.

    Attributes:
        op: MXNet op name.
        fn: ``fn(node, ctx) -> list[ir.Value]``.
        onnx: ONNX ops it emits, for the docs.
        notes: Restrictions, for the docs.
        canonical: The first name the function was registered under (aliases point to it).
    """

    op: str
    fn: Callable
    onnx: str
    notes: str
    canonical: str


#: MXNet op name -> Converter.
CONVERTERS: dict[str, Converter] = {}


def converter(*names: str, onnx: str = "", notes: str = "") -> Callable[[Callable], Callable]:
    """Register the decorated function as the converter of MXNet ops `names`."""

    def register(fn: Callable) -> Callable:
        for name in names:
            if name in CONVERTERS:
                raise ValueError(f"duplicate MXNet converter for {name!r}")
            CONVERTERS[name] = Converter(op=name, fn=fn, onnx=onnx, notes=notes, canonical=names[0])
        return fn

    return register


def supported_ops() -> list[str]:
    """Sorted MXNet op names with a converter (aliases included)."""
    load_all()
    return sorted(CONVERTERS)


def load_all() -> None:
    import graphfix.convert.mxnet.ops_math  # noqa: F401
    import graphfix.convert.mxnet.ops_nn  # noqa: F401
    import graphfix.convert.mxnet.ops_tensor  # noqa: F401


def ops_markdown() -> str:
    """The text of docs/mxnet-supported-ops.md, generated from the table."""
    load_all()
    groups: dict[str, list[str]] = {}
    for name, conv in CONVERTERS.items():
        groups.setdefault(conv.canonical, []).append(name)
    lines = [
        "# MXNet ops supported by graphfix",
        "",
        "Generated from the converter table in `graphfix/convert/mxnet/_table.py`; regenerate with",
        "`python -c 'import graphfix.convert.mxnet as m; m.write_ops_doc()'`;",
        "a test keeps this file equal to the table. Any other op is reported, with its node names, in one",
        "`unsupported_op` error before any conversion work.",
        "",
        "| MXNet op | aliases | ONNX | notes |",
        "|---|---|---|---|",
    ]
    for canonical in sorted(groups, key=str.lower):
        conv = CONVERTERS[canonical]
        aliases = ", ".join(f"`{a}`" for a in sorted(groups[canonical]) if a != canonical)
        lines.append(f"| `{canonical}` | {aliases} | {conv.onnx} | {conv.notes} |")
    return "\n".join(lines) + "\n"

