"""The registry of MXNet op converters: the only list of supported ops.

A converter is a plain function ``(node, ctx) -> list of output values`` registered under one or
more MXNet op names with `@converter`. Docs (`docs/mxnet-supported-ops.md`), `graphfix inspect`
and the unsupported-op error all read `CONVERTERS`.

`values` declares, per attribute with a closed set of values in MXNet 1.9.1's operator
definition, the values converted exactly; the driver refuses any other value by name before the
converter runs (`node NAME (Pooling): pool_type='lp' is not supported`), and the docs list them.
"""

from __future__ import annotations

__all__ = ["Converter", "CONVERTERS", "converter", "supported_ops", "ops_markdown", "values_text", "load_all"]

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Converter:
    """A registered converter.

    Attributes:
        op: MXNet op name.
        fn: ``fn(node, ctx) -> list[ir.Value]``.
        onnx: ONNX ops it emits, for the docs.
        notes: Restrictions, for the docs.
        canonical: The first name the function was registered under (aliases point to it).
        values: Attribute -> the values converted (str, bool or int; None: the attribute unset).
    """

    op: str
    fn: Callable
    onnx: str
    notes: str
    canonical: str
    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)


#: MXNet op name -> Converter.
CONVERTERS: dict[str, Converter] = {}


def converter(
    *names: str, onnx: str = "", notes: str = "", values: dict[str, tuple[Any, ...]] | None = None,
) -> Callable[[Callable], Callable]:
    """Register the decorated function as the converter of MXNet ops `names`.

    `values` maps an attribute to the values converted exactly (any other is refused by name).
    """

    def register(fn: Callable) -> Callable:
        for name in names:
            if name in CONVERTERS:
                raise ValueError(f"duplicate MXNet converter for {name!r}")
            CONVERTERS[name] = Converter(op=name, fn=fn, onnx=onnx, notes=notes, canonical=names[0],
                                         values=dict(values or {}))
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
        "The attribute values column lists, for each attribute with a closed set of values in MXNet",
        "1.9.1's operator definition, the values converted exactly; any other value is refused by name",
        "(`node NAME (Dropout): mode='always' is not supported`). Attributes that only matter in",
        "training (grad_scale, momentum, cudnn_*, workspace, ...) are ignored. Output shapes are MXNet",
        "1.x's, rank included: a result that would be 0-d has shape (1,).",
        "",
        "| MXNet op | aliases | ONNX | attribute values | notes |",
        "|---|---|---|---|---|",
    ]
    for canonical in sorted(groups, key=str.lower):
        conv = CONVERTERS[canonical]
        aliases = ", ".join(f"`{a}`" for a in sorted(groups[canonical]) if a != canonical)
        lines.append(f"| `{canonical}` | {aliases} | {conv.onnx} | {values_text(conv.values)} | {conv.notes} |")
    return "\n".join(lines) + "\n"


def values_text(values: dict[str, tuple[Any, ...]]) -> str:
    """`pool_type` max, avg; `global_pool` any (None shown as "unset")."""
    parts = []
    for key, allowed in values.items():
        shown = ", ".join("unset" if v is None else str(v) for v in allowed)
        parts.append(f"`{key}` {shown}")
    return "; ".join(parts)

