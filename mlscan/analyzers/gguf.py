"""GGUF: bounded parse of the header and metadata; chat templates go to the template checks.

Every count and length is checked against the bytes that remain before it is trusted, so a
lying header is an MLS901/MLS902 finding, never a huge allocation or a long loop.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from mlscan.analyzers.base import Source, register
from mlscan.analyzers.templates import template_findings
from mlscan.context import Budget
from mlscan.errors import LimitExceeded, MalformedError
from mlscan.kinds import Kind
from mlscan.model import Finding

_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9
MAX_KV = 1_000_000
MAX_KEY = 65_535
MAX_TENSORS = 10_000_000


class _Reader:
    """Buffered, position-tracking reader; never reads past `size` when it is known."""

    def __init__(self, stream: BinaryIO, size: int | None, budget: Budget) -> None:
        self.stream, self.size, self.budget = stream, size, budget
        self.buf, self.off, self.pos = b"", 0, 0
        self.big = False

    def remaining(self) -> int | None:
        return None if self.size is None else self.size - self.pos

    def need(self, n: int, what: str) -> None:
        left = self.remaining()
        if left is not None and n > left:
            raise MalformedError(f"{what} claims {n} bytes but only {left} remain", self.pos)

    def read(self, n: int) -> bytes:
        end = self.off + n
        if end <= len(self.buf):  # fast path: inside the current buffer
            data = self.buf[self.off:end]
            self.off = end
            self.pos += n
            return data
        out = bytearray()
        while len(out) < n:
            if self.off >= len(self.buf):
                self.budget.check_time()
                self.buf, self.off = self.stream.read(max(1 << 20, min(n - len(out), 64 << 20))), 0
                if not self.buf:
                    raise MalformedError("file ends inside the GGUF metadata", self.pos)
            take = self.buf[self.off:self.off + n - len(out)]
            self.off += len(take)
            out += take
        self.pos += n
        return bytes(out)

    def skip(self, n: int) -> None:
        if self.off + n <= len(self.buf):
            self.off += n
            self.pos += n
            return
        while n > 0:
            chunk = min(n, 16 << 20)
            self.read(chunk)
            n -= chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.read(size), "big" if self.big else "little")


def _string(r: _Reader, v1: bool, what: str, keep: int) -> str | None:
    """Read a GGUF string; return its text when it is at most `keep` bytes, else skip it."""
    n = r.uint(4 if v1 else 8)
    r.need(n, what)
    if n > keep:
        r.skip(n)
        return None
    return r.read(n).decode("utf-8", "replace")


def _skip_value(r: _Reader, vtype: int, v1: bool, depth: int = 0) -> None:
    if vtype in _SCALAR:
        r.read(_SCALAR[vtype])
    elif vtype == STRING:
        _string(r, v1, "string value", 0)
    elif vtype == ARRAY:
        if depth > 4:
            raise LimitExceeded("GGUF arrays nested more than 4 levels")
        etype = r.uint(4)
        count = r.uint(4 if v1 else 8)
        if etype in _SCALAR:
            size = count * _SCALAR[etype]
            r.need(size, "array")
            r.skip(size)
            return
        r.need(count * (4 if v1 else 8), "array of strings/arrays")
        if etype == STRING:
            _skip_strings(r, count, v1)
            return
        for i in range(count):
            if i % 50_000 == 0:
                r.budget.check_time()
            _skip_value(r, etype, v1, depth + 1)
    else:
        raise MalformedError(f"unknown GGUF value type {vtype}", r.pos)


def _skip_strings(r: _Reader, count: int, v1: bool) -> None:
    """Token lists hold ~100k strings: skip them in a tight loop over the buffer, falling
    back to the checked slow path at buffer edges."""
    width = 4 if v1 else 8
    unpack = struct.Struct((">" if r.big else "<") + ("I" if v1 else "Q")).unpack_from
    limit = r.size
    i = 0
    while i < count:
        r.budget.check_time()
        buf, off, pos = r.buf, r.off, r.pos
        stop = min(count, i + 100_000)
        while i < stop and off + width <= len(buf):
            (n,) = unpack(buf, off)
            nxt = off + width + n
            if nxt > len(buf) or (limit is not None and pos + nxt - r.off > limit):
                break
            off = nxt
            i += 1
        r.pos, r.off = pos + off - r.off, off
        if i < stop:  # at a buffer edge (or a lying length): one item the careful way
            n = r.uint(width)
            r.need(n, "string in array")
            r.skip(n)
            i += 1


def _size(src: Source) -> int | None:
    stream = src.stream
    if stream.seekable():
        here = stream.tell()
        size = stream.seek(0, 2)
        stream.seek(here)
        return size - here
    return src.size


@register(Kind.GGUF)
def analyze_gguf(src: Source, budget: Budget) -> Iterator[Finding]:
    r = _Reader(src.stream, _size(src), budget)
    if r.read(4) != b"GGUF":
        raise MalformedError("missing GGUF magic", 0)
    version = r.uint(4)
    if version > 0xFFFF:  # big-endian GGUF files exist
        r.big = True
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in (1, 2, 3):
        raise MalformedError(f"unsupported GGUF version {version}", 4)
    v1 = version == 1
    n_tensors = r.uint(4 if v1 else 8)
    n_kv = r.uint(4 if v1 else 8)
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise LimitExceeded(f"GGUF header claims {n_tensors} tensors and {n_kv} metadata "
                            "entries (beyond mlscan's limits)")
    r.need(n_kv * 13, f"{n_kv} metadata entries")
    keep = budget.limits.max_text_bytes
    for _ in range(n_kv):
        key_len = r.uint(4 if v1 else 8)
        if key_len > MAX_KEY:
            raise MalformedError(f"metadata key length {key_len} is implausible", r.pos)
        r.need(key_len, "metadata key")
        key = r.read(key_len).decode("utf-8", "replace")
        vtype = r.uint(4)
        if vtype == STRING:
            value = _string(r, v1, f"value of {key}", keep)
            if value is None:
                if "chat_template" in key:
                    raise LimitExceeded(f"{key} larger than {keep} bytes; not checked")
                continue
            if "chat_template" in key:
                yield from template_findings(value, src, f"GGUF metadata {key}")
            elif "{%" in value or "{{" in value:
                for f in template_findings(value, src, f"GGUF metadata {key}"):
                    if f.severity.rank >= 3:
                        yield f
        else:
            _skip_value(r, vtype, v1)
