"""Parallel file hashing: threads reading 1 MiB blocks (hashlib releases the GIL while hashing).

Files are opened non-blocking and checked to be regular before reading, so a FIFO or device
planted in site-packages cannot hang the check.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import hashlib
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass

BLOCK = 1 << 20
_CHUNK = 128
_local = threading.local()


@dataclass(frozen=True)
class HashResult:
    path: str
    sha256: str | None = None
    """Hex digest (None when the file could not be read)."""
    b64: str | None = None
    """The requested algorithm's digest as RECORD stores it: urlsafe base64, no padding."""
    size: int = 0
    missing: bool = False
    problem: str | None = None
    """Not a regular file, permission denied, ..."""


def record_b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _buffer() -> tuple[bytearray, memoryview]:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = bytearray(BLOCK)
        _local.buf = buf
        _local.view = memoryview(buf)
    return buf, _local.view


def hash_file(path: str, algo: str = "sha256") -> HashResult:
    """sha256 (hex, for locks) and `algo` (RECORD form) of one file; never raises."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return HashResult(path, missing=True)
    except OSError as exc:
        return HashResult(path, problem=exc.strerror or str(exc))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return HashResult(path, problem="not a regular file")
        sha = hashlib.sha256()
        other = None if algo == "sha256" else hashlib.new(algo)
        buf, view = _buffer()
        total = 0
        while True:
            n = os.readv(fd, [buf])
            if not n:
                break
            chunk = view[:n]
            sha.update(chunk)
            if other is not None:
                other.update(chunk)
            total += n
        digest = (other or sha).digest()
        return HashResult(path, sha256=sha.hexdigest(), b64=record_b64(digest), size=total)
    except (OSError, ValueError) as exc:
        return HashResult(path, problem=getattr(exc, "strerror", None) or str(exc))
    finally:
        os.close(fd)


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """Up to `limit` bytes of a regular file. Raises OSError for anything else (a FIFO or
    device planted where metadata is expected must not hang or feed us endless data)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{os.fspath(path)}: not a regular file")
        chunks: list[bytes] = []
        remaining = limit
        while remaining > 0:
            chunk = os.read(fd, min(remaining, BLOCK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _hash_chunk(items: Sequence[tuple[str, str]]) -> list[HashResult]:
    return [hash_file(p, a) for p, a in items]


def default_workers() -> int:
    return min(8, (os.cpu_count() or 1) + 2)


class ParallelHasher:
    """Hash files on worker threads while the caller keeps producing work (parsing RECORDs):
    `add()` queues, `results()` waits for everything. One thread means hashing inline."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers or default_workers()
        self._pool = (cf.ThreadPoolExecutor(max_workers=self.workers,
                                            thread_name_prefix="mlscan-hash")
                      if self.workers > 1 else None)
        self._pending: list[tuple[str, str]] = []
        self._futures: list[cf.Future[list[HashResult]]] = []
        self._done: list[HashResult] = []

    def _flush(self) -> None:
        if not self._pending:
            return
        chunk, self._pending = self._pending, []
        if self._pool is None:
            self._done.extend(_hash_chunk(chunk))
        else:
            self._futures.append(self._pool.submit(_hash_chunk, chunk))

    def add(self, path: str, algo: str = "sha256") -> None:
        self._pending.append((path, algo))
        if len(self._pending) >= _CHUNK:
            self._flush()

    def results(self) -> dict[str, HashResult]:
        self._flush()
        try:
            for fut in self._futures:
                self._done.extend(fut.result())
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
        return {r.path: r for r in self._done}


def hash_many(items: Sequence[tuple[str, str]], workers: int = 0) -> dict[str, HashResult]:
    """Hash (path, algo) pairs in parallel; result keyed by path."""
    hasher = ParallelHasher(workers if len(items) >= 2 * _CHUNK else 1)
    for path, algo in items:
        hasher.add(path, algo)
    return hasher.results()
