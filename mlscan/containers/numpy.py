"""NumPy `.npy` (and the members of `.npz`): an object-dtype array is a pickle."""

from __future__ import annotations

import ast
import struct
from collections.abc import Iterator

from mlscan.analyzers.base import Source, register
from mlscan.analyzers.pickle import scan_pickle_stream
from mlscan.context import Budget
from mlscan.errors import MalformedError
from mlscan.kinds import Kind
from mlscan.model import Finding


def _has_objects(descr: object) -> bool:
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list):
        return any(isinstance(f, (list, tuple)) and len(f) >= 2 and _has_objects(f[1])
                   for f in descr)
    return False


@register(Kind.NUMPY)
def analyze_npy(src: Source, budget: Budget) -> Iterator[Finding]:
    stream = src.stream
    magic = stream.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise MalformedError("truncated .npy header")
    major = magic[6]
    if major == 1:
        raw = stream.read(2)
        (hlen,) = struct.unpack("<H", raw) if len(raw) == 2 else (-1,)
    elif major in (2, 3):
        raw = stream.read(4)
        (hlen,) = struct.unpack("<I", raw) if len(raw) == 4 else (-1,)
    else:
        raise MalformedError(f"unknown .npy format version {major}")
    if hlen < 0 or hlen > 1 << 20:
        raise MalformedError("bad .npy header length")
    text = stream.read(hlen)
    if len(text) < hlen:
        raise MalformedError("truncated .npy header")
    try:
        # literal_eval parses literals only: no names, no calls (numpy does the same)
        header = ast.literal_eval(text.decode("latin1" if major < 3 else "utf-8"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        raise MalformedError("unparseable .npy header") from None
    if not isinstance(header, dict) or "descr" not in header:
        raise MalformedError(".npy header without a dtype description")
    if _has_objects(header["descr"]):
        # np.load(allow_pickle=True) unpickles the rest of the file
        start = stream.tell() if stream.seekable() else 0
        yield from scan_pickle_stream(src, budget, start)
