"""Stream adapters: a window onto part of a file, and bounded decompression."""

from __future__ import annotations

import io
from typing import BinaryIO, Protocol

from mlscan.context import Budget
from mlscan.errors import LimitExceeded, MalformedError


class SubFile(io.RawIOBase):
    """Read-only, seekable view of `length` bytes of `base` starting at `start`."""

    def __init__(self, base: BinaryIO, start: int, length: int) -> None:
        super().__init__()
        self._base = base
        self._start = start
        self._length = max(0, length)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            pos = offset
        elif whence == 1:
            pos = self._pos + offset
        else:
            pos = self._length + offset
        self._pos = max(0, pos)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._length - self._pos)
        if n <= 0:
            return 0
        self._base.seek(self._start + self._pos)
        data = self._base.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class _Decompressor(Protocol):
    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...

    @property
    def eof(self) -> bool: ...

    @property
    def unconsumed_tail(self) -> bytes: ...


class DecompressingReader(io.RawIOBase):
    """Streams a decompressor's output, charging every byte to the file's budget and
    stopping bombs (ratio and absolute size) before they cost memory or time."""

    def __init__(self, raw: BinaryIO | io.RawIOBase, make: object, budget: Budget, what: str,
                 compressed_size: int | None = None) -> None:
        super().__init__()
        self._raw = raw
        self._make = make
        self._dec = make()  # type: ignore[operator]
        self._budget = budget
        self._what = what
        self._out = 0
        self._in = 0
        self._pending = b""
        self._eof = False
        self._compressed_size = compressed_size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = len(buffer)
        while not self._pending and not self._eof:
            self._budget.check_time()
            tail = getattr(self._dec, "unconsumed_tail", b"")
            if getattr(self._dec, "eof", False):
                # at the end of a stream zlib may report the leftover input in both places;
                # never feed it back to the finished decompressor (that returns b"" forever)
                unused = getattr(self._dec, "unused_data", b"") or tail
                if unused and self._what in ("gzip", "bzip2", "xz"):
                    # concatenated members, as the gzip/bzip2/xz tools accept
                    self._dec = self._make()  # type: ignore[operator]
                    data = self._decompress(unused, max(want, 1 << 16))
                    self._account(len(data))
                    self._pending = data
                    continue
                self._eof = True
                break
            if tail:
                data = self._decompress(tail, max(want, 1 << 16))
            elif getattr(self._dec, "needs_input", True) is False:
                data = self._decompress(b"", max(want, 1 << 16))
            else:
                chunk = self._raw.read(1 << 14)  # small reads keep the ratio estimate tight
                if not chunk:
                    if not getattr(self._dec, "eof", True):
                        raise MalformedError(f"{self._what} stream truncated", self._in)
                    self._eof = True
                    break
                self._in += len(chunk)
                data = self._decompress(chunk, max(want, 1 << 16))
            self._account(len(data))
            self._pending = data
        n = min(want, len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _decompress(self, chunk: bytes, max_length: int) -> bytes:
        try:
            try:
                return self._dec.decompress(chunk, max_length)  # type: ignore[no-any-return]
            except TypeError:  # bz2 in older Pythons has no max_length keyword position
                return self._dec.decompress(chunk)  # type: ignore[no-any-return]
        except (OSError, EOFError, ValueError) as exc:
            raise MalformedError(f"corrupt {self._what} data: {exc}", self._in) from None
        except Exception as exc:  # noqa: BLE001 - zlib.error and friends
            raise MalformedError(f"corrupt {self._what} data: {exc}", self._in) from None

    def _account(self, n: int) -> None:
        self._out += n
        self._budget.add_decompressed(n)
        limits = self._budget.limits
        ratio = self._out / max(self._in, 1)
        # deflate cannot exceed ~1032x; beyond 5x that only near-constant filler (a bomb or
        # a vast zero array) expands, so stop early; otherwise allow up to the ratio limit
        if (self._out > 32 * 1024 * 1024 and ratio > 5 * limits.max_compression_ratio) or (
                self._out > 256 * 1024 * 1024 and ratio > limits.max_compression_ratio):
            raise LimitExceeded(
                f"{self._what} expands more than {limits.max_compression_ratio}x "
                f"({self._in} -> {self._out}+ bytes): compression bomb")
