"""Pickle streams (raw, joblib, legacy PyTorch, archive members): run the symbolic VM over
every stacked pickle, judge what it imports and calls, and scan embedded payloads."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

from mlscan.analyzers.base import Source, register, scan_source
from mlscan.context import Budget
from mlscan.errors import AnalysisStop, LimitExceeded
from mlscan.kinds import DATA_ONLY_EXTENSIONS, Kind, extension, looks_like_pickle, sniff_bytes
from mlscan.model import Finding, Severity
from mlscan.picklevm.judge import judge
from mlscan.picklevm.machine import Machine
from mlscan.picklevm.policy import policy_for
from mlscan.picklevm.reader import Reader
from mlscan.rulesets.meta import LIMIT_EXCEEDED, MALFORMED
from mlscan.rulesets.model_files import FORMAT_MISMATCH, NESTED_PAYLOAD

NESTED_KINDS = frozenset({Kind.PICKLE, Kind.ZIP, Kind.GZIP, Kind.BZIP2, Kind.XZ, Kind.LZMA,
                          Kind.ZLIB, Kind.SEVENZ, Kind.TAR, Kind.NUMPY})
NESTED_READ_MAX = 64 * 1024 * 1024
"""Largest embedded payload read from an unseekable (decompressed) stream."""


@dataclass
class _Embedded:
    data: bytes | None
    offset: int
    size: int
    kind: Kind


def _nested_kind(head: bytes) -> Kind | None:
    kind = sniff_bytes(head)
    if kind is Kind.PICKLE and not (head[:1] == b"\x80" or head[:1] == b"c"):
        return None  # protocol 0 data without a GLOBAL is harmless and too easy to mistake
    return kind if kind in NESTED_KINDS else None


def mismatch_finding(src: Source, what: str) -> Finding | None:
    ext = extension(src.name)
    if ext in DATA_ONLY_EXTENSIONS:
        return FORMAT_MISMATCH.finding(
            src.path, f"{src.name} is named like a {ext} file but contains {what}: loaders and "
            "scanners that trust the extension are fooled", member=src.member,
            evidence=f"{ext} file containing {what}")
    return None


@register(Kind.PICKLE)
def analyze_pickle(src: Source, budget: Budget) -> Iterator[Finding]:
    mismatch = mismatch_finding(src, "a pickle")
    if mismatch:
        yield mismatch
    yield from scan_pickle_stream(src, budget)


def scan_pickle_stream(src: Source, budget: Budget, start: int = 0) -> Iterator[Finding]:
    """Every pickle stacked in the stream, then the payloads embedded in them."""
    policy = policy_for(budget.settings.extra_pickle_allowlist)
    reader = Reader(src.stream, start)
    embedded: list[_Embedded] = []
    seekable = src.stream.seekable()

    def on_blob(data: bytes | None, offset: int, size: int) -> None:
        head = data[:64] if data is not None else reader.data[reader.pos:reader.pos + 64]
        kind = _nested_kind(head)
        if kind is None:
            return
        if data is None and not seekable:
            if size > NESTED_READ_MAX:
                raise LimitExceeded(f"embedded {kind.value} payload of {size} bytes is too "
                                    "large to scan inside a compressed stream", offset)
            data = reader.read(size)
            reader.pos -= size  # the machine skips it as usual
        embedded.append(_Embedded(data, offset, size, kind))

    index = 0
    while True:
        machine = Machine(reader, budget, on_blob)
        try:
            machine.run()
        except AnalysisStop as exc:
            trace = machine.trace
            if index > 0 and not trace.globals and not trace.events:
                break  # bytes after the last pickle (legacy torch storages): not a pickle
            yield from judge(trace, policy, src.path, src.member)
            rule = LIMIT_EXCEEDED if isinstance(exc, LimitExceeded) else MALFORMED
            seen = ""
            if trace.globals or trace.calls:
                seen = (f"; {len(trace.globals)} imports and {len(trace.calls)} calls before the "
                        "break are reported (a loader runs them before failing)")
            which = f"pickle #{index + 1}" if index else "pickle"
            yield rule.finding(src.path, f"{which} in {src.name}: {exc.message}{seen}",
                               member=src.member, offset=exc.offset, evidence=exc.message)
            break
        yield from judge(machine.trace, policy, src.path, src.member)
        index += 1
        if not reader.fill(2) or not looks_like_pickle(reader.data[reader.pos:reader.pos + 64]):
            break
    yield from _scan_embedded(src, budget, embedded)


def _scan_embedded(src: Source, budget: Budget, embedded: list[_Embedded]) -> Iterator[Finding]:
    for emb in embedded:
        budget.check_time()
        if emb.data is not None:
            stream: io.BufferedIOBase = io.BytesIO(emb.data)
        else:
            from mlscan.containers.streams import SubFile

            stream = io.BufferedReader(SubFile(src.stream, emb.offset, emb.size))
        child = src.child(stream, f"<bytes@{emb.offset}>", emb.size)  # type: ignore[arg-type]
        found = [f for f in scan_source(child, budget, emb.kind)
                 if f.rule_id != MALFORMED.code]  # random bytes often sniff as something
        if any(f.severity.rank >= Severity.LOW.rank and not f.rule_id.startswith("MLS9")
               for f in found):
            yield NESTED_PAYLOAD.finding(
                src.path, f"{emb.size} bytes inside the pickle are themselves a {emb.kind.value} "
                "with executable content (scanned below)", member=src.member, offset=emb.offset,
                evidence=f"embedded {emb.kind.value}")
        yield from found
