"""Reader and writer for the IDX format used by (Fashion-)MNIST.

Layout: two zero bytes, a dtype code, the number of dimensions, one big-endian uint32 per dimension,
then the payload in big-endian order. Files may be gzip-compressed; we detect that by the magic
bytes because renamed or recompressed copies (Debian's, for one) do not always keep the extension.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np

from fashionlab.errors import DataError
from fashionlab.reading import gunzip, read_bytes

GZIP_MAGIC = b"\x1f\x8b"

# The standard IDX type codes; every multi-byte type is stored big-endian.
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {(dtype.kind, dtype.itemsize): code for code, dtype in DTYPES.items()}


def decompressed_bytes(path: str | os.PathLike) -> bytes:
    """The file's content, gunzipped if it starts with the gzip magic bytes. Read through reading.py: a regular
    file (a FIFO or device gets a one-line DataError), at most CAPS["idx"] bytes before and after decompression,
    so a small gzip bomb cannot fill memory."""
    path = Path(path)
    raw = read_bytes(path, kind="idx", error=DataError)
    if not raw.startswith(GZIP_MAGIC):
        return raw
    return gunzip(raw, kind="idx", source=path.name, error=DataError)


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse decompressed IDX bytes into a native-endian array; `name` is used in error messages."""
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file: only {len(data)} bytes")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\0\0":
        raise DataError(f"{name}: not an IDX file: bad magic {data[:4].hex()} (expected 0000<type><ndim>)")
    if code not in DTYPES:
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated header: {ndim} dimensions need {header} bytes, found {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise DataError(f"{name}: truncated: expected {expected} payload bytes, found {found}")
    if found > expected:
        raise DataError(f"{name}: {found - expected} trailing bytes after the {expected}-byte payload")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    # astype copies: callers get a writable, native-endian array that torch.from_numpy accepts.
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a plain or gzip-compressed IDX file; any defect raises DataError naming the file."""
    path = Path(path)
    return parse_idx(decompressed_bytes(path), path.name)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool = False) -> Path:
    """Write `array` as an IDX file (gzip-compressed if `compress`); returns the path."""
    array = np.asarray(array)
    code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(DTYPES[code]).tobytes()
    path = Path(path)
    # mtime=0 keeps compressed output byte-identical across runs.
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path
