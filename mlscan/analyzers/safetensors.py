"""safetensors: validate the header the way the reference loader does; never read tensors.

Only the 8-byte length, the JSON header, the file size and (when the declared tensors end
before the file does) the first bytes after them are read.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Iterator
from typing import Any

from mlscan.analyzers.base import Source, register, scan_source
from mlscan.analyzers.templates import check_template
from mlscan.context import Budget
from mlscan.errors import LimitExceeded, MalformedError
from mlscan.kinds import Kind, looks_like_pickle, sniff_bytes
from mlscan.model import Finding, Severity
from mlscan.rulesets.model_formats import SAFETENSORS_INVALID, SAFETENSORS_PAYLOAD

MAX_HEADER = 100_000_000  # the reference implementation's limit
# Bits per element (sub-byte float formats are packed).
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
_CODE = re.compile(r"\b(?:__import__|exec\(|eval\(|os\.system|subprocess|import\s+os\b|"
                   r"popen\(|pickle\.loads|marshal\.loads|base64\.b64decode)")
MAX_REPORTS = 20
MAX_TRAILING = 64 << 20


@register(Kind.SAFETENSORS)
def analyze_safetensors(src: Source, budget: Budget) -> Iterator[Finding]:
    stream = src.stream
    head = stream.read(8)
    if len(head) < 8:
        raise MalformedError("file shorter than the 8-byte header length")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER:
        raise LimitExceeded(f"header length {n} exceeds the safetensors limit of {MAX_HEADER}")
    size = _size(src, budget)
    if n > size - 8:
        raise MalformedError(f"header length {n} runs past the end of the file ({size} bytes)",
                             offset=0)
    raw = stream.read(n)
    if len(raw) < n:
        raise MalformedError("file ends inside the header", offset=8)
    problems: list[str] = []
    header = _parse(raw, problems)
    data_len = size - 8 - n
    end = _check_tensors(header, data_len, problems)
    for problem in problems[:MAX_REPORTS]:
        yield SAFETENSORS_INVALID.finding(src.path, f"{src.name}: {problem}", evidence=problem,
                                          member=src.member, offset=8)
    yield from _metadata(header.get("__metadata__"), src)
    if end is not None and end < data_len:
        yield from _trailing(src, budget, 8 + n + end, size)
    if looks_like_pickle(head) and stream.seekable():
        yield from _as_pickle(src, budget)


def _as_pickle(src: Source, budget: Budget) -> Iterator[Finding]:
    """The header length happens to start like a pickle: torch.load would unpickle this
    file, so run the pickle analysis too and keep what it proves (high and above)."""
    src.stream.seek(0)
    for f in scan_source(src, budget, kind=Kind.PICKLE):
        if f.severity.rank >= Severity.HIGH.rank and f.rule_id not in ("MLS902",):
            yield f


def _size(src: Source, budget: Budget) -> int:
    stream = src.stream
    if stream.seekable():
        here = stream.tell()
        size = stream.seek(0, 2)
        stream.seek(here)
        return size
    if src.size is not None:
        return src.size
    raise MalformedError("size of a nested, unseekable safetensors stream is unknown; "
                         "offsets could not be validated")


def _parse(raw: bytes, problems: list[str]) -> dict[str, Any]:
    if not raw.startswith(b"{"):
        raise MalformedError("header does not start with '{'", offset=8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedError(f"header is not UTF-8: {exc}", offset=8) from None

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            problems.append(f"duplicate header keys {dup[:5]} (readers disagree on which wins)")
        return dict(items)

    try:
        obj = json.loads(text.rstrip(" "), object_pairs_hook=pairs)
    except RecursionError:
        raise LimitExceeded("header JSON nested too deeply") from None
    except ValueError as exc:
        raise MalformedError(f"header is not valid JSON: {exc}", offset=8) from None
    if not isinstance(obj, dict):
        raise MalformedError("header JSON is not an object", offset=8)
    return obj


def _check_tensors(header: dict[str, Any], data_len: int, problems: list[str]) -> int | None:
    """Validate every entry; returns the end of the last range (None if unusable)."""
    ranges: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            meta = info
            if not isinstance(meta, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
                problems.append("__metadata__ must map strings to strings")
            continue
        if not isinstance(info, dict):
            problems.append(f"tensor {name!r}: entry is not an object")
            continue
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BITS:
            problems.append(f"tensor {name!r}: unknown dtype {dtype!r}")
            continue
        if not (isinstance(shape, list) and all(_uint(d) for d in shape)):
            problems.append(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
            continue
        if not (isinstance(offs, list) and len(offs) == 2 and all(_uint(o) for o in offs)):
            problems.append(f"tensor {name!r}: data_offsets {offs!r} invalid")
            continue
        begin, end = offs
        count = 1
        for d in shape:
            count *= d
        bits = count * DTYPE_BITS[dtype]
        if end < begin:
            problems.append(f"tensor {name!r}: data_offsets end before they begin")
        elif bits % 8 or bits // 8 != end - begin:
            problems.append(f"tensor {name!r}: {dtype}{shape} needs {bits / 8:g} bytes but "
                            f"data_offsets span {end - begin}")
        if end > data_len:
            problems.append(f"tensor {name!r}: range [{begin}, {end}) runs past the data area "
                            f"({data_len} bytes)")
        ranges.append((begin, end, name))
    ranges.sort()
    last = 0
    for begin, end, name in ranges:
        if begin < last:
            problems.append(f"tensor {name!r}: range [{begin}, {end}) overlaps another tensor")
        elif begin > last:
            problems.append(f"tensor {name!r}: gap of {begin - last} unexplained bytes before it")
        last = max(last, end)
    if last < data_len:
        problems.append(f"{data_len - last} bytes after the last tensor are not described by "
                        "the header")
    return last


def _uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 62


def _metadata(meta: Any, src: Source) -> Iterator[Finding]:
    if not isinstance(meta, dict):
        return
    for key, value in list(meta.items())[:10_000]:
        if not isinstance(value, str):
            continue
        what = _payload_kind(value)
        if what:
            yield SAFETENSORS_PAYLOAD.finding(
                src.path, f"{src.name}: __metadata__[{key!r}] holds {what}",
                evidence=f"{key}: {value[:60]}", member=src.member)
        elif ("{{" in value or "{%" in value) and (
                issues := [i for i in check_template(value) if i.severity.rank >= 3]):
            yield SAFETENSORS_PAYLOAD.finding(
                src.path, f"{src.name}: __metadata__[{key!r}] holds a template: "
                f"{issues[0].message}", evidence=issues[0].evidence, member=src.member,
                severity=Severity.CRITICAL)
        elif _CODE.search(value):
            yield SAFETENSORS_PAYLOAD.finding(
                src.path, f"{src.name}: __metadata__[{key!r}] contains Python code",
                evidence=f"{key}: {value[:60]}", member=src.member, severity=Severity.MEDIUM)


def _payload_kind(value: str) -> str | None:
    data = value.encode("latin-1", "ignore")[:64]
    if looks_like_pickle(data) and data[:1] == b"\x80":
        return "a raw pickle"
    if len(value) >= 16 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", value[:4096]):
        try:
            decoded = base64.b64decode(value[:88], validate=False)
        except (binascii.Error, ValueError):
            return None
        if decoded[:1] == b"\x80" and looks_like_pickle(decoded[:16]):
            return "a base64-encoded pickle"
        if decoded.startswith(b"PK\x03\x04"):
            return "a base64-encoded zip archive"
    return None


def _trailing(src: Source, budget: Budget, start: int, size: int) -> Iterator[Finding]:
    stream = src.stream
    if not stream.seekable():
        return
    stream.seek(start)
    extra = stream.read(min(512, size - start))
    stream.seek(max(start, size - 22))
    tail = stream.read(22)
    kind = sniff_bytes(extra)
    if kind is not Kind.UNKNOWN or tail.startswith(b"PK\x05\x06"):
        what = kind.value if kind is not Kind.UNKNOWN else "zip"
        yield SAFETENSORS_PAYLOAD.finding(
            src.path, f"{src.name}: {size - start} bytes after the last tensor contain a "
            f"{what} stream (polyglot file)", evidence=f"trailing {what}", member=src.member,
            offset=start)
        if kind is not Kind.UNKNOWN:  # scan what a different loader would open
            stream.seek(start)
            data = stream.read(min(size - start, MAX_TRAILING))
            child = src.child(io.BytesIO(data), "trailing-data", len(data))
            yield from scan_source(child, budget)
