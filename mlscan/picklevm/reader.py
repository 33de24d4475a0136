"""Buffered byte reader over a (possibly unseekable, possibly huge) stream.

The VM asks for small spans; large byte strings are skipped, not read, so the cost of a
checkpoint scales with its pickle opcodes, not with its tensor bytes.
"""

from __future__ import annotations

from typing import BinaryIO

from mlscan.errors import MalformedError

CHUNK = 1 << 20


class Reader:
    __slots__ = ("_eof", "base", "data", "pos", "stream")

    def __init__(self, stream: BinaryIO, start: int = 0) -> None:
        self.stream = stream
        self.data = b""
        self.pos = 0
        self.base = start
        """Stream offset of data[0]."""
        self._eof = False

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def fill(self, n: int) -> bool:
        """Make at least n bytes available at pos; False at end of stream."""
        avail = len(self.data) - self.pos
        if avail >= n:
            return True
        if self._eof:
            return False
        rest = self.data[self.pos:]
        self.base += self.pos
        self.pos = 0
        parts = [rest]
        have = len(rest)
        want = max(n, CHUNK)
        while have < want:
            chunk = self.stream.read(want - have)
            if not chunk:
                self._eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        self.data = b"".join(parts)
        return len(self.data) >= n

    def at_eof(self) -> bool:
        return not self.fill(1)

    def read(self, n: int) -> bytes:
        if not self.fill(n):
            raise MalformedError(f"stream truncated: needed {n} bytes", self.offset)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def readline(self, limit: int = 1 << 16) -> bytes:
        """Bytes up to (not including) the next newline, which is consumed."""
        while True:
            idx = self.data.find(b"\n", self.pos, self.pos + limit)
            if idx >= 0:
                out = self.data[self.pos:idx]
                self.pos = idx + 1
                return out
            if len(self.data) - self.pos >= limit:
                raise MalformedError("line argument too long", self.offset)
            before = len(self.data) - self.pos
            if not self.fill(before + 1):
                raise MalformedError("stream truncated inside a line argument", self.offset)

    def skip(self, n: int) -> None:
        """Advance n bytes without keeping them (seek when the stream allows)."""
        avail = len(self.data) - self.pos
        if n <= avail:
            self.pos += n
            return
        n -= avail
        self.base += len(self.data)
        self.data = b""
        self.pos = 0
        stream = self.stream
        if stream.seekable():
            cur = stream.tell()
            end = stream.seek(0, 2)
            if cur + n > end:
                stream.seek(end)
                self.base = end
                self._eof = True
                raise MalformedError(f"length field points {cur + n - end} bytes past the end "
                                     "of the stream", cur)
            stream.seek(cur + n)
            self.base = cur + n
            return
        while n > 0:
            chunk = stream.read(min(n, CHUNK))
            if not chunk:
                self._eof = True
                raise MalformedError("stream truncated inside a skipped value", self.base)
            n -= len(chunk)
            self.base += len(chunk)

    def remaining_hint(self) -> int | None:
        """Bytes left in the stream, when cheaply known."""
        stream = self.stream
        if not stream.seekable():
            return None
        cur = stream.tell()
        end = stream.seek(0, 2)
        stream.seek(cur)
        return end - cur + (len(self.data) - self.pos)
