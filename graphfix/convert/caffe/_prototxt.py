"""A tolerant reader for Caffe's protobuf text format (`deploy.prototxt`).

The text is tokenized and parsed into `Msg` objects typed by the tables in `_schema`. Syntax
errors name the line. Unknown field names (fork layers' `*_param`, newer fields) are skipped with a
warning instead of failing the parse: the converter decides later whether the layer is needed.
"""

from __future__ import annotations

__all__ = ["PrototxtError", "parse_prototxt", "TOKEN"]

import logging
import re
from typing import Any

import numpy as np

from graphfix.convert.caffe._schema import IGNORED, MESSAGES, Field, Msg

logger = logging.getLogger(__name__)

TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n\f\v]+|\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<word>[A-Za-z0-9_.+\-]+)
  | (?P<punct>[{}<>\[\]:,;])
  | (?P<bad>.)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}
_CLOSE = {"{": "}", "<": ">"}
#: Deepest `{ }` nesting accepted (real nets use 4).
MAX_DEPTH = 64


class PrototxtError(ValueError):
    """A syntax or value error in a prototxt; `line` is 1-based."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def _unquote(tok: str, line: int) -> str:
    body = tok[1:-1]
    if "\\" not in body:
        return body
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            m = re.match(r"[0-7]{1,3}", body[i + 1 :])
            if m:
                out.append(chr(int(m.group(), 8)))
                i += 1 + len(m.group())
                continue
            raise PrototxtError(f"unknown escape \\{nxt} in string", line)
        out.append(c)
        i += 1
    return "".join(out)


class _Tokens:
    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str, int]] = []  # (kind, text, line)
        append = self.toks.append
        lines = text.split("\n")
        for line_no, line in enumerate(lines, start=1):  # no token spans lines
            for m in TOKEN.finditer(line):
                kind = m.lastgroup
                if kind == "ws":
                    continue
                if kind == "bad":
                    raise PrototxtError(f"unexpected character {m.group()!r}", line_no)
                append((kind, m.group(), line_no))
        self.i = 0
        self.last_line = len(lines) - 1 if len(lines) > 1 and not lines[-1].strip() else len(lines)

    def peek(self) -> tuple[str, str, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self, what: str) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise PrototxtError(f"unexpected end of file, expected {what}", self.last_line)
        self.i += 1
        return tok


def _parse_block(toks: _Tokens, close: str | None, depth: int = 0) -> list[tuple[str, Any, int]]:
    """Parse `name: value` / `name { ... }` entries until `close` (or the end of the file)."""
    if depth > MAX_DEPTH:
        raise PrototxtError(f"blocks nested deeper than {MAX_DEPTH} levels", toks.toks[toks.i - 1][2])
    entries: list[tuple[str, Any, int]] = []
    while True:
        tok = toks.peek()
        if tok is None:
            if close is not None:
                raise PrototxtError(f"unexpected end of file, missing '{close}'", toks.last_line)
            return entries
        kind, text, line = tok
        if kind == "punct" and text == close:
            toks.i += 1
            return entries
        if kind != "word" or not re.match(r"[A-Za-z_]", text):
            raise PrototxtError(f"expected a field name, got {text!r}", line)
        toks.i += 1
        name = text
        kind2, text2, line2 = toks.next(f"':' or '{{' after {name!r}")
        if text2 == ":":
            kind2, text2, line2 = toks.next(f"a value for {name!r}")
        if kind2 == "punct" and text2 in _CLOSE:
            entries.append((name, _parse_block(toks, _CLOSE[text2], depth + 1), line))
        elif kind2 == "punct" and text2 == "[":
            while True:
                k, t, ln = toks.next("a list value or ']'")
                if t == "]":
                    break
                if t == ",":
                    continue
                if k == "punct" and t in _CLOSE:
                    entries.append((name, _parse_block(toks, _CLOSE[t], depth + 1), ln))
                else:
                    entries.append((name, _scalar_token(toks, k, t, ln), ln))
        elif kind2 in ("word", "str"):
            entries.append((name, _scalar_token(toks, kind2, text2, line2), line2))
        else:
            raise PrototxtError(f"expected a value for {name!r}, got {text2!r}", line2)
        nxt = toks.peek()
        if nxt is not None and nxt[0] == "punct" and nxt[1] in ",;":
            toks.i += 1


def _scalar_token(toks: _Tokens, kind: str, text: str, line: int) -> tuple[str, str]:
    if kind == "punct":
        raise PrototxtError(f"expected a value, got {text!r}", line)
    if kind == "str":
        parts = [_unquote(text, line)]
        while (nxt := toks.peek()) is not None and nxt[0] == "str":  # adjacent strings concatenate
            parts.append(_unquote(nxt[1], nxt[2]))
            toks.i += 1
        return ("str", "".join(parts))
    return ("word", text)


_INT_KINDS = {"int32", "int64", "uint32", "uint64"}


def _convert_scalar(f: Field, value: tuple[str, str], line: int, where: str) -> Any:
    kind, text = value
    try:
        if f.kind in ("string", "bytes"):
            return text  # unquoted identifiers are tolerated
        if kind == "str":
            raise ValueError
        if f.kind in _INT_KINDS:
            v = int(text, 0) if text.lower().startswith(("0x", "-0x")) else int(text)
            if f.kind.startswith("uint") and v < 0:
                raise ValueError
            return v
        if f.kind in ("float", "double", "floats", "doubles"):
            low = text.lower().rstrip("f") if not text.lower().startswith(("inf", "-inf", "nan")) else text.lower()
            if low in ("inf", "infinity", "-inf", "-infinity", "nan"):
                return float(low.replace("infinity", "inf"))
            return float(low)
        if f.kind == "bool":
            if text in ("true", "True", "t", "1"):
                return True
            if text in ("false", "False", "f", "0"):
                return False
            raise ValueError
        if f.kind == "enum":
            if f.enum and text in f.enum:
                return f.enum[text]
            return int(text)
    except ValueError:
        pass
    raise PrototxtError(f"bad value {text!r} for {where}.{f.name} ({f.kind})", line)


def _to_msg(entries: list[tuple[str, Any, int]], type_name: str, path: str, unknown: list[tuple[str, int]]) -> Msg:
    """Type `entries` by the schema; unknown field names go to `unknown` as (dotted name, line)."""
    schema = MESSAGES[type_name]
    ignored = IGNORED.get(type_name, ())
    out = Msg(type_name)
    for name, value, line in entries:
        f = schema.by_name.get(name)
        if f is None:
            if name not in ignored:
                unknown.append((f"{path}.{name}", line))
            continue
        if f.message is not None:
            if not isinstance(value, list):
                raise PrototxtError(f"{path}.{name} needs a {{ ... }} block", line)
            if f.message in ("LayerParameter", "V1LayerParameter"):
                layer_unknown: list[tuple[str, int]] = []
                v: Any = _to_msg(value, f.message, name, layer_unknown)
                v["_line"] = line  # where the layer starts, for error messages
                v["_unknown"] = layer_unknown  # reported by the converter if the layer is used
            else:
                v = _to_msg(value, f.message, f"{path}.{name}", unknown)
        else:
            if isinstance(value, list):
                raise PrototxtError(f"{path}.{name} takes a value, not a {{ ... }} block", line)
            v = _convert_scalar(f, value, line, path)
        if f.repeated:
            out.setdefault(name, []).append(v)
        else:
            out[name] = v
    for name, f in schema.by_name.items():
        if f.kind in ("floats", "doubles") and name in out:
            out[name] = np.asarray(out[name], dtype=np.float32 if f.kind == "floats" else np.float64)
    return out


def parse_prototxt(text: str, message: str = "NetParameter") -> Msg:
    """Parse prototxt text into a `Msg` of type `message`.

    Each layer carries `_line` (where it starts) and `_unknown` (unknown fields as (name, line));
    unknown fields outside layers are logged here as warnings.

    Raises:
        PrototxtError: on a syntax error or a bad value (with the line number).
    """
    toks = _Tokens(text)
    entries = _parse_block(toks, None)
    unknown: list[tuple[str, int]] = []
    msg = _to_msg(entries, message, message, unknown)
    for name, line in unknown:
        logger.warning("prototxt line %d: unknown field %s skipped", line, name)
    return msg
