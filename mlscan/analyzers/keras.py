"""HDF5 (.h5) Keras models: the `model_config` / `training_config` root attributes.

h5py is used when installed (it reads metadata only); otherwise, or when h5py cannot open
the file, the bytes are searched for embedded Keras JSON configs, which is how they are
stored (a fixed- or variable-length string in the root object header or global heap).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from mlscan.analyzers.base import Source, register
from mlscan.analyzers.keras_config import check_config, looks_like_keras
from mlscan.context import Budget
from mlscan.errors import MalformedError
from mlscan.kinds import Kind
from mlscan.model import Finding
from mlscan.rulesets.meta import MALFORMED

_ATTRS = ("model_config", "training_config")
_MARKERS = (b'{"class_name"', b'{"module"')
_CHUNK = 8 << 20
_MAX_JSON = 64 << 20


@register(Kind.HDF5)
def analyze_hdf5(src: Source, budget: Budget) -> Iterator[Finding]:
    stream = src.stream
    if stream.seekable():
        try:
            configs = list(_h5py_configs(stream))
        except ImportError:
            configs = None
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            yield MALFORMED.finding(src.path, f"{src.name}: h5py cannot read this HDF5 file "
                                    f"({exc}); searched its bytes for Keras configs instead",
                                    member=src.member, evidence="hdf5-unreadable")
            configs = None
        if configs is not None:
            for name, obj in configs:
                yield from check_config(obj, src, budget, f"HDF5 attribute {name}")
            return
        stream.seek(0)
    for offset, obj in scan_embedded_json(stream, budget):
        yield from check_config(obj, src, budget, f"Keras config at offset {offset}")


def _h5py_configs(stream: BinaryIO) -> Iterator[tuple[str, Any]]:
    import h5py  # optional dependency; metadata only, no datasets are read

    stream.seek(0)
    with h5py.File(stream, "r") as f:
        for name in _ATTRS:
            if name not in f.attrs:
                continue
            raw = f.attrs[name]
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            try:
                obj = json.loads(text)
            except ValueError as exc:
                raise MalformedError(f"attribute {name} is not valid JSON: {exc}") from None
            yield name, obj


def scan_embedded_json(stream: BinaryIO, budget: Budget) -> Iterator[tuple[int, Any]]:
    """Keras JSON objects found anywhere in a byte stream (chunked, bounded)."""
    base = 0
    tail = b""
    covered = -1  # end of the last parsed object: nested markers are part of it
    while True:
        budget.check_time()
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        data = tail + chunk
        start = base - len(tail)
        for marker in _MARKERS:
            pos = data.find(marker)
            while pos >= 0:
                absolute = start + pos
                if absolute >= covered:
                    obj, size = _json_at(stream, data, pos, absolute)
                    if looks_like_keras(obj):
                        covered = absolute + size
                        yield absolute, obj
                pos = data.find(marker, pos + 1)
        tail = data[-64:]
        base += len(chunk)


def _json_at(stream: BinaryIO, data: bytes, pos: int, absolute: int) -> tuple[Any, int]:
    end = _balanced_end(data, pos)
    if end is None and stream.seekable():
        # The object runs past this chunk: read it directly (bounded).
        here = stream.tell()
        stream.seek(absolute)
        data, pos = stream.read(_MAX_JSON), 0
        stream.seek(here)
        end = _balanced_end(data, pos)
    if end is None:
        return None, 0
    try:
        return json.loads(data[pos:end].decode("utf-8", "replace")), end - pos
    except (ValueError, RecursionError):
        return None, 0


def _balanced_end(data: bytes, pos: int) -> int | None:
    depth = 0
    in_str = esc = False
    for i in range(pos, min(len(data), pos + _MAX_JSON)):
        c = data[i]
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:
                esc = True
            elif c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return i + 1
    return None
