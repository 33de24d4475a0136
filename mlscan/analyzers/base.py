"""The analyzer interface: a Source in, findings out. Registered per Kind in one table.

Analyzers never print, exit or read configuration. Errors are raised as `AnalysisStop`
subclasses (or anything else, for bugs) and turned into findings by `scan_source`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, cast

from mlscan.context import Budget
from mlscan.errors import LimitExceeded, MalformedError
from mlscan.kinds import HEAD_SIZE, Kind, sniff, trailing_zip
from mlscan.model import Finding
from mlscan.rulesets.meta import ANALYZER_ERROR, LIMIT_EXCEEDED, MALFORMED


@dataclass(frozen=True)
class Source:
    """One artifact to analyze: a top-level file or a member nested inside one."""

    stream: BinaryIO
    """Readable binary stream positioned at the artifact's first byte; may be unseekable."""
    path: str
    """Display path of the top-level file (relative to the scan root)."""
    name: str
    """Name of this artifact (the file name or the archive member name)."""
    member: str | None = None
    """Chain of archive members inside `path`, joined with '!'; None for the file itself."""
    size: int | None = None
    """Byte size when known (None for decompressed streams)."""
    depth: int = 0
    fs_path: Path | None = None
    """The file on disk, for top-level artifacts only (analyzers that look at siblings)."""
    kind: Kind = Kind.UNKNOWN

    def child(self, stream: BinaryIO, name: str, size: int | None) -> Source:
        member = name if self.member is None else f"{self.member}!{name}"
        return Source(stream=stream, path=self.path, name=name, member=member, size=size,
                      depth=self.depth + 1, fs_path=None)

    def head(self, n: int = HEAD_SIZE) -> bytes:
        """Peek at the first bytes without consuming them (stream must be seekable or peekable)."""
        stream = self.stream
        peek = getattr(stream, "peek", None)
        if peek is not None and not stream.seekable():
            return bytes(peek(n)[:n])
        pos = stream.tell()
        data = stream.read(n)
        stream.seek(pos)
        return data


Analyzer = Callable[[Source, Budget], Iterator[Finding]]
_ANALYZERS: dict[Kind, Analyzer] = {}


def register(*kinds: Kind) -> Callable[[Analyzer], Analyzer]:
    def deco(fn: Analyzer) -> Analyzer:
        for kind in kinds:
            _ANALYZERS[kind] = fn
        return fn

    return deco


def analyzer_for(kind: Kind) -> Analyzer | None:
    from mlscan.analyzers import load_for

    load_for((kind.value,))
    return _ANALYZERS.get(kind)


def ensure_peekable(stream: BinaryIO) -> BinaryIO:
    if stream.seekable() or hasattr(stream, "peek"):
        return stream
    return cast(BinaryIO, io.BufferedReader(cast(Any, stream), buffer_size=HEAD_SIZE * 2))


def scan_source(src: Source, budget: Budget, kind: Kind | None = None) -> Iterator[Finding]:
    """Sniff (unless told), dispatch, and turn every failure into a finding."""
    try:
        if src.depth > budget.limits.max_depth:
            raise LimitExceeded(f"nesting deeper than {budget.limits.max_depth} levels")
        budget.check_time()
        if kind is None:
            src = replace(src, stream=ensure_peekable(src.stream))
            kind = sniff(src.head(), src.name)
            if kind is Kind.UNKNOWN and src.stream.seekable():
                kind = trailing_zip(src.stream)
        analyzer = analyzer_for(kind)
        if analyzer is None:
            return
        yield from analyzer(replace(src, kind=kind), budget)
    except MalformedError as exc:
        yield MALFORMED.finding(src.path, f"{src.name}: {exc.message}", member=src.member,
                                offset=exc.offset, evidence=exc.message)
    except LimitExceeded as exc:
        yield LIMIT_EXCEEDED.finding(src.path, f"{src.name}: {exc.message}", member=src.member,
                                     offset=exc.offset, evidence=exc.message)
    except (OSError, EOFError) as exc:
        msg = f"{src.name}: cannot read: {exc}"
        yield MALFORMED.finding(src.path, msg, member=src.member, evidence=type(exc).__name__)
    except RecursionError:
        msg = f"{src.name}: structure nested too deeply to analyze"
        yield LIMIT_EXCEEDED.finding(src.path, msg, member=src.member, evidence="recursion")
    except MemoryError:
        yield LIMIT_EXCEEDED.finding(src.path, f"{src.name}: out of memory while analyzing",
                                     member=src.member, evidence="memory")
    except Exception as exc:  # noqa: BLE001 - a bug must become a finding, not a clean pass
        yield ANALYZER_ERROR.finding(
            src.path, f"{src.name}: internal error in {kind.value if kind else '?'} analyzer: "
            f"{type(exc).__name__}: {exc}", member=src.member, evidence=type(exc).__name__)


@dataclass(frozen=True)
class Target:
    """A discovered top-level file, as batch analyzers receive it."""

    fs_path: Path
    path: str
    """Display path (relative to the scan root)."""
    kind: Kind


BatchAnalyzer = Callable[[list[Target], Budget], Iterator[Finding]]
_BATCH: list[tuple[frozenset[Kind], BatchAnalyzer]] = []


def register_batch(*kinds: Kind) -> Callable[[BatchAnalyzer], BatchAnalyzer]:
    """Register an analyzer that runs once per scan over all targets of these kinds
    (for tools with a high start-up cost, such as semgrep)."""

    def deco(fn: BatchAnalyzer) -> BatchAnalyzer:
        _BATCH.append((frozenset(kinds), fn))
        return fn

    return deco


def batch_analyzers(kinds: Iterable[Kind]) -> list[tuple[frozenset[Kind], BatchAnalyzer]]:
    """Batch analyzers that serve any of `kinds` (only their modules are imported)."""
    from mlscan.analyzers import load_for

    wanted = set(kinds)
    load_for(k.value for k in wanted)
    return [(served, fn) for served, fn in _BATCH if served & wanted]
