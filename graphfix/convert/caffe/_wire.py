"""A small protobuf wire-format reader driven by the tables in `_schema`.

No protobuf library and no compiled schema: the reader walks tags and lengths itself, checks every
length against the buffer before slicing, skips unknown field numbers (forks add many), accepts
packed and unpacked encodings of repeated scalars, and bounds message nesting. Packed float fields
(`BlobProto.data`) become `numpy.frombuffer` views of the buffer (no copy, no Python float per
value), so a memory-mapped caffemodel is read without copying its weights.
"""

from __future__ import annotations

__all__ = ["WireError", "decode", "read_varint", "skip_field", "MAX_DEPTH"]

import struct
from typing import Any

import numpy as np

from graphfix.convert.caffe._schema import MESSAGES, Field, Msg

#: Deepest message nesting accepted (NetParameter > LayerParameter > BlobProto > BlobShape is 4).
MAX_DEPTH = 32

_VARINT, _FIXED64, _LEN, _SGROUP, _EGROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_SCALAR_WIRE = {
    "int32": _VARINT, "int64": _VARINT, "uint32": _VARINT, "uint64": _VARINT, "bool": _VARINT,
    "enum": _VARINT, "float": _FIXED32, "double": _FIXED64, "floats": _FIXED32, "doubles": _FIXED64,
}  # fmt: skip


class WireError(ValueError):
    """The bytes are not a valid protobuf message (truncated, bad tag, too deep)."""


def read_varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError(f"varint longer than 10 bytes at byte {pos}")


def _signed(value: int) -> int:
    """Two's complement of a 64-bit varint (int32/int64 negatives are sign-extended to 10 bytes)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def skip_field(buf: Any, pos: int, end: int, wire: int, depth: int) -> int:
    if wire == _VARINT:
        return read_varint(buf, pos, end)[1]
    if wire == _FIXED64:
        pos += 8
    elif wire == _FIXED32:
        pos += 4
    elif wire == _LEN:
        n, pos = read_varint(buf, pos, end)
        if n > end - pos:
            raise WireError(f"length {n} at byte {pos} runs past the end of the data ({end - pos} bytes left)")
        pos += n
    elif wire == _SGROUP:
        if depth > MAX_DEPTH:
            raise WireError("groups nested too deeply")
        while True:
            key, pos = read_varint(buf, pos, end)
            if key & 7 == _EGROUP:
                break
            pos = skip_field(buf, pos, end, key & 7, depth + 1)
    else:
        raise WireError(f"invalid wire type {wire} at byte {pos}")
    if pos > end:
        raise WireError(f"truncated field at byte {pos}")
    return pos


def _scalar(kind: str, raw: int) -> Any:
    if kind in ("int32", "int64", "enum"):
        return _signed(raw)
    if kind == "uint32":
        return raw & 0xFFFFFFFF
    if kind == "bool":
        return bool(raw)
    return raw


def _read_fixed(buf: Any, pos: int, end: int, size: int) -> int:
    if end - pos < size:
        raise WireError(f"truncated fixed{size * 8} at byte {pos}")
    return pos + size


def decode(buf: Any, message: str, start: int = 0, end: int | None = None, depth: int = 0) -> Msg:
    """Decode `buf[start:end]` as the schema message `message`.

    Args:
        buf: bytes, mmap or memoryview; numpy views of packed floats keep it alive.
        message: A message name from `_schema.MESSAGES`.
        start: First byte.
        end: One past the last byte (default: the end of `buf`).
        depth: Nesting level (for the recursion bound).

    Returns:
        A `Msg` holding the known fields that were present.

    Raises:
        WireError: on truncated or malformed data.
    """
    if end is None:
        end = len(buf)
    if depth > MAX_DEPTH:
        raise WireError(f"messages nested deeper than {MAX_DEPTH} levels")
    schema = MESSAGES[message]
    by_number = schema.by_number
    out = Msg(message)
    arrays: dict[str, list] = {}
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {pos}")
        field: Field | None = by_number.get(number)
        if field is None:
            pos = skip_field(buf, pos, end, wire, depth)
            continue
        kind = field.kind
        if field.message is not None:
            if wire != _LEN:
                pos = skip_field(buf, pos, end, wire, depth)
                continue
            n, pos = read_varint(buf, pos, end)
            if n > end - pos:
                raise WireError(f"{message}.{field.name}: length {n} runs past the end ({end - pos} bytes left)")
            value: Any = decode(buf, field.message, pos, pos + n, depth + 1)
            pos += n
        elif kind in ("string", "bytes"):
            if wire != _LEN:
                pos = skip_field(buf, pos, end, wire, depth)
                continue
            n, pos = read_varint(buf, pos, end)
            if n > end - pos:
                raise WireError(f"{message}.{field.name}: length {n} runs past the end ({end - pos} bytes left)")
            raw = bytes(buf[pos : pos + n])
            value = raw.decode("utf-8", "replace") if kind == "string" else raw
            pos += n
        elif wire == _LEN and field.repeated:  # packed repeated scalars
            n, pos = read_varint(buf, pos, end)
            if n > end - pos:
                raise WireError(f"{message}.{field.name}: packed length {n} runs past the end ({end - pos} bytes left)")
            stop = pos + n
            if kind in ("floats", "doubles", "float", "double"):
                width = 4 if kind in ("floats", "float") else 8
                if n % width:
                    raise WireError(f"{message}.{field.name}: packed length {n} is not a multiple of {width}")
                arr = np.frombuffer(buf, dtype="<f4" if width == 4 else "<f8", count=n // width, offset=pos)
                arrays.setdefault(field.name, []).append(arr)
            else:
                items = out.setdefault(field.name, [])
                while pos < stop:
                    raw_int, pos = read_varint(buf, pos, stop)
                    items.append(_scalar(kind, raw_int))
            pos = stop
            continue
        else:
            expected = _SCALAR_WIRE.get(kind)
            if wire != expected:
                pos = skip_field(buf, pos, end, wire, depth)
                continue
            if wire == _VARINT:
                raw_int, pos = read_varint(buf, pos, end)
                value = _scalar(kind, raw_int)
            elif wire == _FIXED32:
                nxt = _read_fixed(buf, pos, end, 4)
                value = _F32.unpack_from(buf, pos)[0]
                pos = nxt
            else:
                nxt = _read_fixed(buf, pos, end, 8)
                value = _F64.unpack_from(buf, pos)[0]
                pos = nxt
            if kind in ("floats", "doubles"):
                arrays.setdefault(field.name, []).append(value)
                continue
        if field.repeated:
            out.setdefault(field.name, []).append(value)
        else:
            out[field.name] = value
    if pos != end:
        raise WireError(f"{message}: field runs past its end at byte {pos}")
    for name, parts in arrays.items():
        dtype = np.float32 if MESSAGES[message].by_name[name].kind == "floats" else np.float64
        if len(parts) == 1 and isinstance(parts[0], np.ndarray):
            out[name] = parts[0]
        else:
            out[name] = np.concatenate([np.atleast_1d(np.asarray(p, dtype=dtype)) for p in parts])
    return out
