"""discover -> cache -> analyzers (process pool) -> suppress -> filter -> Report.
No printing, no config reading: the CLI turns config into ScanOptions."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlscan import registry
from mlscan.analyzers.base import Source, Target, batch_analyzers, scan_source
from mlscan.cache import NEVER_CACHE, Cache, Hasher
from mlscan.context import Budget, Settings
from mlscan.discover import Artifact, discover
from mlscan.kinds import Kind
from mlscan.model import Finding, Report, Severity, Summary
from mlscan.rulesets.meta import ANALYZER_ERROR, NOT_SCANNED
from mlscan.suppress import SuppressOptions, apply_suppressions

Progress = Callable[[int, int, str], None]
"""Called as (done, total, current display path)."""


@dataclass(frozen=True)
class ScanOptions:
    paths: tuple[Path, ...]
    settings: Settings = field(default_factory=Settings)
    exclude: tuple[str, ...] = ()
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    min_severity: Severity = Severity.LOW
    jobs: int = 0
    """0 = one per CPU; 1 = in-process."""
    base: Path | None = None
    """Display paths are relative to this (default: the working directory)."""
    suppress: SuppressOptions = field(default_factory=SuppressOptions)
    cache_dir: Path | None = None
    """Result cache folder; None disables the cache."""
    folder_summary: bool = False
    """Add a per-model-folder summary (formats, what loading runs, safest loader)."""


def analyze_artifact(artifact: Artifact, settings: Settings) -> list[Finding]:
    """Analyze one top-level file. Runs in worker processes: must never raise."""
    budget = Budget(settings)
    try:
        with open(artifact.fs_path, "rb") as fh:
            src = Source(stream=fh, path=artifact.path, name=artifact.fs_path.name,
                         size=artifact.size, fs_path=artifact.fs_path)
            return list(scan_source(src, budget, kind=artifact.kind))
    except OSError as exc:
        return [NOT_SCANNED.finding(artifact.path, f"cannot read: {exc.strerror or exc}",
                                    evidence="unreadable")]
    except Exception as exc:  # noqa: BLE001 - never lose a file to a bug
        return [ANALYZER_ERROR.finding(artifact.path, f"internal error: {type(exc).__name__}: "
                                       f"{exc}", evidence=type(exc).__name__)]


# Below this much estimated work, starting worker processes costs more than it saves
# (a pre-commit run over a few small model files). Code weighs more: it is parsed, not skimmed.
_POOL_MIN_WORK = 4 * 1024 * 1024
_CODE_WEIGHT = 50


def _pool_size(jobs: int, artifacts: Sequence[Artifact]) -> int:
    n = len(artifacts)
    if jobs == 1 or n < 4:
        return 1
    if jobs == 0:  # automatic: only when the work is worth the start-up
        work = sum(a.size * (_CODE_WEIGHT if a.kind in (Kind.PYTHON, Kind.NOTEBOOK) else 1)
                   for a in artifacts)
        if work < _POOL_MIN_WORK:
            return 1
    cpus = os.cpu_count() or 1
    return max(1, min(jobs or cpus, n))


def _analyze(artifacts: Sequence[Artifact], opts: ScanOptions,
             progress: Progress | None) -> Iterator[tuple[Artifact, list[Finding]]]:
    workers = _pool_size(opts.jobs, artifacts)
    total = len(artifacts)
    if workers == 1:
        for i, art in enumerate(artifacts):
            if progress:
                progress(i, total, art.path)
            yield art, analyze_artifact(art, opts.settings)
        return
    import concurrent.futures as cf  # only when a pool is worth it: costs start-up time
    import multiprocessing

    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(analyze_artifact, a, opts.settings): a for a in artifacts}
        for i, fut in enumerate(cf.as_completed(futures)):
            art = futures[fut]
            if progress:
                progress(i + 1, total, art.path)
            try:
                yield art, fut.result()
            except Exception as exc:  # noqa: BLE001 - a dead worker is a finding, not a crash
                yield art, [ANALYZER_ERROR.finding(
                    art.path, f"worker failed: {type(exc).__name__}: {exc}",
                    evidence=type(exc).__name__)]


def _run_files(artifacts: Sequence[Artifact], opts: ScanOptions, progress: Progress | None,
               store: Cache | None) -> list[Finding]:
    findings: list[Finding] = []
    todo: list[Artifact] = []
    keys: dict[Path, str | None] = {}
    for art in artifacts:
        key = store.key(art.fs_path, art.path, art.kind, "file") if store else None
        cached = store.get(key, art.path) if store else None
        if cached is None:
            keys[art.fs_path] = key
            todo.append(art)
        else:
            findings.extend(cached)
    for art, result in _analyze(todo, opts, progress):
        findings.extend(result)
        if store:
            store.put(keys[art.fs_path], result)
    return findings


def _run_batches(artifacts: Sequence[Artifact], settings: Settings,
                 store: Cache | None) -> list[Finding]:
    findings: list[Finding] = []
    for kinds, fn in batch_analyzers({a.kind for a in artifacts}):
        layer = f"batch:{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', fn)}"
        targets, keys = [], {}
        for a in artifacts:
            if a.kind not in kinds:
                continue
            key = store.key(a.fs_path, a.path, a.kind, layer) if store else None
            cached = store.get(key, a.path) if store else None
            if cached is None:
                targets.append(Target(a.fs_path, a.path, a.kind))
                keys[a.path] = key
            else:
                findings.extend(cached)
        if not targets:
            continue  # every file cached: the tool (semgrep) is not even started
        try:
            result = list(fn(targets, Budget(settings)))
        except Exception as exc:  # noqa: BLE001
            findings.append(ANALYZER_ERROR.finding(
                targets[0].path, f"batch analyzer {getattr(fn, '__name__', fn)} failed: "
                f"{type(exc).__name__}: {exc}", evidence=type(exc).__name__))
            continue
        findings.extend(result)
        if store and not any(f.rule_id in NEVER_CACHE for f in result):
            for path, key in keys.items():
                store.put(key, (f for f in result if f.path == path))
    return findings


def keep(finding: Finding, opts: ScanOptions) -> bool:
    if finding.severity.rank < opts.min_severity.rank:
        return False
    if opts.select and not registry.matches(finding.rule_id, opts.select):
        return False
    return not (opts.ignore and registry.matches(finding.rule_id, opts.ignore))


def dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per rule and source line (two engines may both see an MLS41x flow; the
    more severe report wins); binary findings (no line) stay apart by offset and message."""
    best: dict[tuple[object, ...], Finding] = {}
    for f in findings:
        if f.line is not None:
            key: tuple[object, ...] = (f.rule_id, f.path, f.member, f.line)
        else:
            key = (f.rule_id, f.path, f.member, f.column, f.offset, f.evidence, f.message)
        kept = best.get(key)
        if kept is None or f.severity.rank > kept.severity.rank:
            best[key] = f
    return sorted(best.values(), key=Finding.sort_key)


def scan(opts: ScanOptions, progress: Progress | None = None) -> Report:
    start = time.perf_counter()
    found = discover(opts.paths, opts.exclude, base=opts.base)
    hasher = Hasher()
    store = Cache(opts.cache_dir, opts.settings, hasher) if opts.cache_dir else None
    raw: list[Finding] = list(found.findings)
    raw.extend(_run_files(found.artifacts, opts, progress, store))
    raw.extend(_run_batches(found.artifacts, opts.settings, store))
    base = (opts.base or Path.cwd()).absolute()
    # Display path -> file; files reported by discovery itself (e.g. unknown format) too.
    files = {a.path: a.fs_path for a in found.artifacts}
    outcome = apply_suppressions(
        dedupe(raw), opts.suppress,
        sources={a.path: a.fs_path for a in found.artifacts if a.kind is Kind.PYTHON},
        sha256_of=lambda p: hasher.sha256(files.get(p) or base / p))
    findings = [f for f in dedupe(outcome.findings) if keep(f, opts)]
    suppressed = sorted(((f, why) for f, why in outcome.suppressed if keep(f, opts)),
                        key=lambda item: item[0].sort_key())
    summary = Summary(
        files=len(found.artifacts),
        bytes=sum(a.size for a in found.artifacts),
        seconds=round(time.perf_counter() - start, 3),
    )
    folders: list[str] = []
    if opts.folder_summary:
        from mlscan.analyzers.folder_summary import summarize_scan

        # folders the user asked to scan; a single file gets no summary of its siblings
        dirs = [p for p in opts.paths if p.is_dir()]
        folders = summarize_scan(dirs, findings, base=opts.base) if dirs else []
    return Report(findings=tuple(findings), summary=summary, folders=tuple(folders),
                  suppressed=tuple(f for f, _ in suppressed),
                  suppressions=tuple(why for _, why in suppressed),
                  roots=tuple(str(p.absolute()) for p in opts.paths))
