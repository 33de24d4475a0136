"""gzip, bzip2, xz, lzma and bare zlib wrappers (joblib's compressors): decompress as a
stream, within the file's budget, and scan what is inside."""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

from mlscan.analyzers.base import Source, register, scan_source
from mlscan.containers.streams import DecompressingReader
from mlscan.context import Budget
from mlscan.kinds import Kind
from mlscan.model import Finding

_MAKERS: dict[Kind, tuple[str, Callable[[], object]]] = {
    Kind.GZIP: ("gzip", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
    Kind.ZLIB: ("zlib", zlib.decompressobj),
    Kind.BZIP2: ("bzip2", bz2.BZ2Decompressor),
    Kind.XZ: ("xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
    Kind.LZMA: ("lzma", lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE)),
}
_SUFFIXES = (".gz", ".gzip", ".bz2", ".xz", ".lzma", ".z", ".zlib")


@register(Kind.GZIP, Kind.ZLIB, Kind.BZIP2, Kind.XZ, Kind.LZMA)
def analyze_compressed(src: Source, budget: Budget) -> Iterator[Finding]:
    what, make = _MAKERS[src.kind]
    reader = DecompressingReader(src.stream, make, budget, what, src.size)
    stream = io.BufferedReader(reader, 1 << 16)
    lower = src.name.lower()
    inner = src.name
    for suffix in _SUFFIXES:
        if lower.endswith(suffix):
            inner = src.name[: -len(suffix)]
            break
    else:
        inner = f"{src.name}<{what}>"
    child = src.child(cast(BinaryIO, stream), inner, None)
    yield from scan_source(child, budget)
