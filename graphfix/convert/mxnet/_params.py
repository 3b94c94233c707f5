"""Reader (and a small writer) for MXNet `.params` / `.nd` NDArray list files, without mxnet.

Layout (little-endian, see /work/shared/formats/mxnet.md): list magic 0x112, a reserved u64, the
record count, the records, then the name count and the names. A record is V2 (magic 0xF993FAC9,
what mxnet 1.x writes: stype, shape, context, dtype, data), V3 (0xF993FACA, same layout with
numpy-shape semantics), V1 (0xF993FAC8: V2 without stype) or V0 (no magic: u32 ndim, u32 dims,
context, dtype, data).

The file is memory-mapped and every array is a `numpy.frombuffer` view of the map (no copy).
Every declared size is checked against the bytes left in the file before anything is allocated,
so a corrupt header can never make the reader ask for terabytes.
"""

from __future__ import annotations

__all__ = ["ParamsFile", "read_params", "write_params", "DTYPE_CODES"]

import logging
import mmap
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)

_LIST_MAGIC = 0x112
_V1_MAGIC = 0xF993FAC8
_V2_MAGIC = 0xF993FAC9
_V3_MAGIC = 0xF993FACA
_STYPES = {0: "dense", 1: "row_sparse", 2: "csr"}
_MAX_NDIM = 32


def _bfloat16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


#: mshadow TypeFlag code -> NumPy dtype (bfloat16 resolved lazily through ml_dtypes).
DTYPE_CODES: dict[int, str] = {
    0: "float32",
    1: "float64",
    2: "float16",
    3: "uint8",
    4: "int32",
    5: "int8",
    6: "int64",
    7: "bool",
    8: "int16",
    9: "uint16",
    10: "uint32",
    11: "uint64",
    12: "bfloat16",
}


def _np_dtype(code: int) -> np.dtype:
    name = DTYPE_CODES[code]
    return _bfloat16() if name == "bfloat16" else np.dtype(name).newbyteorder("<")


@dataclass
class ParamsFile:
    """The arrays of one params file.

    Attributes:
        path: The file read.
        arrays: Name as stored (with `arg:`/`aux:`) -> array (a read-only view of the file map).
        version: Record layout seen first: "V0", "V1", "V2" or "V3".
        args: Name without prefix -> array, for `arg:` names (and unprefixed names).
        aux: Name without prefix -> array, for `aux:` names.
    """

    path: str
    arrays: dict[str, np.ndarray]
    version: str
    args: dict[str, np.ndarray] = field(default_factory=dict)
    aux: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def lookup(self, name: str) -> np.ndarray | None:
        """The array for variable `name` (arg first, then aux), or None."""
        if name in self.args:
            return self.args[name]
        return self.aux.get(name)


#: No array has more elements than this (numpy's limit is near 2**63 bytes).
_MAX_ELEMENTS = 1 << 48


class _Reader:
    """Bounds-checked cursor over a bytes-like buffer."""

    def __init__(self, buf, path: str) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)
        self.path = path

    def fail(self, what: str) -> GraphfixError:
        return GraphfixError(f"corrupt MXNet params file: {what} at byte {self.pos}", path=self.path)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"truncated: {what} needs {n} bytes but only {self.size - self.pos} remain")

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return out

    def u32(self, what: str) -> int:
        return self.unpack("<I", what)[0]

    def i32(self, what: str) -> int:
        return self.unpack("<i", what)[0]

    def u64(self, what: str) -> int:
        return self.unpack("<Q", what)[0]

    def shape(self, what: str, *, legacy: bool = False) -> tuple[int, ...] | None:
        ndim = self.u32(what) if legacy else self.i32(what)
        if ndim in (0, -1):
            return None
        if ndim < 0 or ndim > _MAX_NDIM:
            raise self.fail(f"{what} has {ndim} dimensions")
        dims = self.unpack(f"<{ndim}{'I' if legacy else 'q'}", what)
        if any(d < 0 for d in dims):
            raise self.fail(f"{what} has a negative dimension {dims}")
        extent = 1
        for d in dims:  # zero-size arrays still need a representable shape
            extent *= max(int(d), 1)
        if extent > _MAX_ELEMENTS:
            raise self.fail(f"{what} declares an impossible shape {dims}")
        return tuple(int(d) for d in dims)


def _read_record(r: _Reader, index: int) -> tuple[np.ndarray | None, str]:
    what = f"array {index}"
    magic = r.u32(f"{what} header")
    if magic in (_V2_MAGIC, _V3_MAGIC):
        version = "V2" if magic == _V2_MAGIC else "V3"
        stype = r.i32(f"{what} storage type")
        if stype != 0:
            kind = _STYPES.get(stype, f"storage type {stype}")
            raise GraphfixError(
                f"array {index} is a sparse ({kind}) array; graphfix reads dense params only",
                path=r.path,
                hint="convert it to dense in MXNet with .tostype('default') and save again",
            )
        shape = r.shape(f"{what} shape")
    elif magic == _V1_MAGIC:
        version = "V1"
        shape = r.shape(f"{what} shape")
    else:
        version = "V0"
        r.pos -= 4
        shape = r.shape(f"{what} shape", legacy=True)
    if shape is None:
        return None, version
    r.unpack("<ii", f"{what} context")
    code = r.i32(f"{what} dtype")
    if code not in DTYPE_CODES:
        raise r.fail(f"{what} has unknown dtype code {code}")
    dtype = _np_dtype(code)
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    r.need(nbytes, f"{what} data of shape {shape} ({DTYPE_CODES[code]})")
    arr = np.frombuffer(r.buf, dtype=dtype, count=count, offset=r.pos).reshape(shape)
    r.pos += nbytes
    return arr, version


def read_params(path: str | os.PathLike) -> ParamsFile:
    """Read an MXNet params file (every record version, dense arrays) as views of a memory map.

    Args:
        path: The `.params` (or `.nd`) file.

    Returns:
        A `ParamsFile`; arrays are read-only and keep the map alive.

    Raises:
        GraphfixError: missing, truncated or corrupt file, or sparse arrays.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise GraphfixError("no such params file", path=path)
    size = os.path.getsize(path)
    if size < 24:
        raise GraphfixError(f"not an MXNet params file: only {size} bytes", path=path)
    with open(path, "rb") as fh:
        buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    r = _Reader(memoryview(buf), path)
    magic, _reserved = r.unpack("<QQ", "header")
    if magic != _LIST_MAGIC:
        raise GraphfixError(
            f"not an MXNet params file: header 0x{magic:x}, expected 0x112", path=path
        )
    count = r.u64("array count")
    # Every record takes at least 4 bytes (a V0 'none' record), so the count is bounded by the file.
    if count > (size - r.pos) // 4:
        raise r.fail(f"truncated: {count} arrays declared in {size} bytes")
    arrays: list[np.ndarray | None] = []
    versions: set[str] = set()
    for i in range(count):
        arr, version = _read_record(r, i)
        arrays.append(arr)
        versions.add(version)
    n_names = r.u64("name count")
    if n_names not in (0, count):
        raise r.fail(f"{n_names} names for {count} arrays")
    names: list[str] = []
    for i in range(n_names):
        length = r.u64(f"name {i} length")
        r.need(length, f"name {i}")
        try:
            names.append(bytes(r.buf[r.pos : r.pos + length]).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise r.fail(f"name {i} is not UTF-8") from exc
        r.pos += length
    if r.pos != size:
        raise r.fail(f"{size - r.pos} unexpected trailing bytes")
    if not names:
        names = [str(i) for i in range(count)]
    out = ParamsFile(path=path, arrays={}, version=sorted(versions)[0] if versions else "V2")
    for name, arr in zip(names, arrays):
        if arr is None:
            continue
        out.arrays[name] = arr
        kind, sep, short = name.partition(":")
        if sep and kind == "aux":
            out.aux[short] = arr
        elif sep and kind == "arg":
            out.args[short] = arr
        else:
            out.args[name] = arr
    logger.debug("read %d arrays (%s) from %s", len(out.arrays), ",".join(sorted(versions)), path)
    return out


_CODE_OF = {np.dtype(v): k for k, v in DTYPE_CODES.items() if v != "bfloat16"}


def write_params(path: str | os.PathLike, arrays: dict[str, np.ndarray], *, version: str = "V2") -> None:
    """Write arrays as an MXNet params file (dense; for fixtures, tests and benchmarks).

    Args:
        path: Output file.
        arrays: Name (e.g. ``"arg:fc1_weight"``) -> array; written in dict order, streamed.
        version: Record layout, "V0", "V1", "V2" or "V3".
    """
    if version not in ("V0", "V1", "V2", "V3"):
        raise ValueError(f"unknown record version {version!r}")
    with open(path, "wb") as fh:
        fh.write(struct.pack("<QQQ", _LIST_MAGIC, 0, len(arrays)))
        for arr in arrays.values():
            a = np.asarray(arr)
            code = _CODE_OF[a.dtype.newbyteorder("=")] if a.dtype.name != "bfloat16" else 12
            if version == "V0":
                fh.write(struct.pack(f"<I{a.ndim}I", a.ndim, *a.shape))
            else:
                magic = {"V1": _V1_MAGIC, "V2": _V2_MAGIC, "V3": _V3_MAGIC}[version]
                fh.write(struct.pack("<I", magic))
                if version != "V1":
                    fh.write(struct.pack("<i", 0))
                fh.write(struct.pack(f"<i{a.ndim}q", a.ndim, *a.shape))
            fh.write(struct.pack("<iii", 1, 0, code))
            fh.write(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
        fh.write(struct.pack("<Q", len(arrays)))
        for name in arrays:
            raw = name.encode("utf-8")
            fh.write(struct.pack("<Q", len(raw)))
            fh.write(raw)
