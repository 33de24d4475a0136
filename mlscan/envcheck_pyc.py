"""`mlscan env --bytecode`: byte-code caches that Python would run instead of their source.

Python loads `__pycache__/mod.<tag>.pyc` without reading `mod.py` when the header's source
mtime and size (or source hash) still match, so an edited .pyc with an intact header runs code
that no RECORD check of `mod.py` can see. We recompile the (verified) source with our own
interpreter and compare. The cached file is never unmarshalled: a small pure-Python reader walks
both marshal streams into comparable trees (marshal's back-references depend on reference counts
in the writing process, so bytes alone can differ for identical code), ignoring `co_filename`
(a relocated environment keeps valid caches with old paths).
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import marshal
import os
import struct
import sys
from collections.abc import Sequence

from mlscan.envcheck_hash import read_regular

_HEADER = 16
_MAX_PYC = 64 * 1024 * 1024
_MAX_DEPTH = 200


class _Bad(Exception):
    pass


class _Reader:
    """Marshal stream -> nested tuples. Enough of the format for code objects (3.11+)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.refs: list[object] = []

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _Bad("truncated")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def _i32(self) -> int:
        return int(struct.unpack("<i", self._take(4))[0])

    def _u8(self) -> int:
        return self._take(1)[0]

    def read(self, depth: int = 0) -> object:
        if depth > _MAX_DEPTH:
            raise _Bad("too deep")
        byte = self._u8()
        code, flag = chr(byte & 0x7F), byte & 0x80
        slot = -1
        if flag:
            slot = len(self.refs)
            self.refs.append(None)
        value = self._value(code, depth)
        if flag:
            self.refs[slot] = value
        return value

    def _value(self, code: str, depth: int) -> object:
        simple = {"0": ("null",), "N": None, "F": False, "T": True, "S": ("stopiter",),
                  ".": ("ellipsis",)}
        if code in simple:
            return simple[code]
        if code == "i":
            return ("int", self._i32())
        if code == "l":
            n = self._i32()
            digits = [int(struct.unpack("<H", self._take(2))[0]) for _ in range(abs(n))]
            value = sum(d << (15 * i) for i, d in enumerate(digits))
            return ("int", -value if n < 0 else value)
        if code == "g":
            return ("float", self._take(8))
        if code == "y":
            return ("complex", self._take(16))
        if code in "fx":
            parts = 1 if code == "f" else 2
            return ("ftext", tuple(self._take(self._u8()) for _ in range(parts)))
        if code == "s":
            return ("bytes", self._take(self._i32()))
        if code in "tuaA":
            return ("str", self._take(self._i32()))
        if code in "zZ":
            return ("str", self._take(self._u8()))
        if code in "([<>":
            n = self._i32()
            items = tuple(self.read(depth + 1) for _ in range(n))
            if code in "<>":  # set order follows string hashes, randomized per process
                items = tuple(sorted(items, key=repr))
            return (code, items)
        if code == ")":
            return ("(", tuple(self.read(depth + 1) for _ in range(self._u8())))
        if code == "{":
            pairs: list[tuple[object, object]] = []
            while True:
                key = self.read(depth + 1)
                if key == ("null",):
                    return ("{", tuple(pairs))
                pairs.append((key, self.read(depth + 1)))
        if code == "r":
            index = self._i32()
            if not 0 <= index < len(self.refs):
                raise _Bad("bad reference")
            return self.refs[index]
        if code == "c":
            ints = tuple(self._i32() for _ in range(5))
            objs = [self.read(depth + 1) for _ in range(8)]  # code..qualname
            objs[5] = ("filename",)  # co_filename: ignored (relocated environments)
            first = self._i32()
            tail = (self.read(depth + 1), self.read(depth + 1))  # linetable, exceptiontable
            return ("code", ints, tuple(objs), first, tail)
        raise _Bad(f"unknown marshal type {code!r}")


def _tree(data: bytes) -> object:
    reader = _Reader(data)
    value = reader.read()
    if reader.pos != len(data):
        raise _Bad("trailing data")
    return value


def header_in_use(header: bytes, source: bytes, st: os.stat_result) -> bool:
    """True when Python would load this cache instead of compiling the source."""
    if len(header) < _HEADER or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    flags = int.from_bytes(header[4:8], "little")
    if flags == 0:
        mtime = int.from_bytes(header[8:12], "little")
        size = int.from_bytes(header[12:16], "little")
        return mtime == int(st.st_mtime) & 0xFFFFFFFF and size == st.st_size & 0xFFFFFFFF
    if flags == 0b01:
        return True  # unchecked hash-based cache: used without looking at the source
    if flags == 0b11:
        return header[8:16] == importlib.util.source_hash(source)
    return False


def _optimize(pyc: str) -> int:
    name = os.path.basename(pyc)
    return 2 if ".opt-2." in name else 1 if ".opt-1." in name else 0


Verdict = tuple[bool, str | None]
"""(in use and proven equal to its source, reason it is bad or None)."""


def compare(pyc: str, source_path: str) -> Verdict:
    """Whether the cache Python would run equals the compiled source, and why not."""
    try:
        st = os.stat(source_path)
        source = read_regular(source_path, _MAX_PYC)
        cached = read_regular(pyc, _MAX_PYC + 1)
    except OSError:
        return False, None  # missing or unreadable files are reported by the RECORD check
    if not header_in_use(cached[:_HEADER], source, st):
        return False, None  # Python will recompile it
    if len(cached) > _MAX_PYC:
        return False, "byte-code cache too large to verify"
    try:
        code = compile(source, source_path, "exec", dont_inherit=True,
                       optimize=_optimize(pyc))
    except (SyntaxError, ValueError):
        return False, "source does not compile, but a cache for it is in use"
    fresh = marshal.dumps(code)
    if fresh == cached[_HEADER:]:
        return True, None
    try:
        same = _tree(fresh) == _tree(cached[_HEADER:])
    except (_Bad, struct.error, RecursionError):
        return False, "byte-code cache cannot be read"
    return (True, None) if same else (False, "byte-code differs from the compiled source")


def _compare_chunk(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, Verdict]]:
    return [(pyc, compare(pyc, src)) for pyc, src in pairs]


def cache_pairs(sources: Sequence[str]) -> list[tuple[str, str]]:
    """(cache, source) for every cache of these sources for our interpreter's version."""
    tag = sys.implementation.cache_tag
    return [(pyc, src) for src in sources for pyc in caches_for(src, tag)]


def caches_for(source_path: str, cache_tag: str) -> list[str]:
    folder, name = os.path.split(source_path)
    stem = name[:-3]
    cache = os.path.join(folder, "__pycache__")
    return [p for p in (os.path.join(cache, f"{stem}.{cache_tag}{opt}.pyc")
                        for opt in ("", ".opt-1", ".opt-2")) if os.path.isfile(p)]


def compare_pairs(pairs: Sequence[tuple[str, str]], workers: int = 0) -> dict[str, Verdict]:
    """Verdict per cache path; compiles in worker processes (compile holds the GIL)."""
    workers = workers or (os.cpu_count() or 1)
    if workers <= 1 or len(pairs) < 64:
        return dict(_compare_chunk(pairs))
    chunks = [pairs[i::workers * 4] for i in range(workers * 4)]
    out: dict[str, Verdict] = {}
    with cf.ProcessPoolExecutor(max_workers=workers) as pool:
        for found in pool.map(_compare_chunk, chunks):
            out.update(found)
    return out
