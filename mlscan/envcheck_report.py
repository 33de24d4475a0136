"""Turn an `EnvResult` into a Report; optionally run the code analyzers on hook and changed
Python files (only to explain what changed code does: the integrity check stands alone)."""

from __future__ import annotations

import os
from pathlib import Path

from mlscan.envcheck import EnvResult
from mlscan.envcheck_hash import hash_file
from mlscan.envcheck_lock import Item
from mlscan.model import Finding, Report, Severity, Summary


def code_findings(result: EnvResult, limit: int = 500) -> list[Item]:
    """Feed hook, modified and added Python files to the code analyzer, when one is installed.

    Optional: the environment check stands on its own; this only explains what changed code
    does."""
    if not result.hook_files:
        return []
    from mlscan.analyzers.base import Source, Target, analyzer_for, batch_analyzers, scan_source
    from mlscan.context import Budget, Settings
    from mlscan.kinds import Kind
    from mlscan.rulesets.meta import ANALYZER_ERROR

    try:
        if analyzer_for(Kind.PYTHON) is None:
            return []
    except Exception as exc:  # noqa: BLE001 - optional step: say it failed, keep the rest
        shown = result.target.display(result.hook_files[0])
        return [Item(ANALYZER_ERROR.finding(shown, f"code analyzer unavailable: "
                                            f"{type(exc).__name__}: {exc}",
                                            evidence=type(exc).__name__))]
    out: list[Item] = []
    settings = Settings()
    paths = list(dict.fromkeys(result.hook_files))[:limit]
    # Findings about a file carry its hash, so a lock that accepts the file accepts them too.
    files = {result.target.display(p): (p, hash_file(p).sha256) for p in paths}

    def item(f: Finding) -> Item:
        abs_path, sha = files.get(f.path, (None, None))
        return Item(f, f.path if abs_path else None, sha, abs_path)

    for shown, (path, _sha) in files.items():
        try:
            with open(path, "rb") as fh:
                src = Source(stream=fh, path=shown, name=os.path.basename(path),
                             size=os.fstat(fh.fileno()).st_size, fs_path=Path(path))
                out.extend(item(f) for f in scan_source(src, Budget(settings), kind=Kind.PYTHON))
        except OSError:
            continue  # already reported by the integrity check
    targets = [Target(Path(p), shown, Kind.PYTHON) for shown, (p, _s) in files.items()
               if p.endswith(".py")]
    try:
        batches = batch_analyzers({Kind.PYTHON}) if targets else []
    except Exception:  # noqa: BLE001 - optional step
        batches = []
    for _kinds, fn in batches:
        try:
            out.extend(item(f) for f in fn(targets, Budget(settings)))
        except Exception as exc:  # noqa: BLE001 - a failing tool is a finding, not a crash
            out.append(Item(ANALYZER_ERROR.finding(
                targets[0].path, f"batch analyzer failed: {type(exc).__name__}: {exc}",
                evidence=type(exc).__name__)))
    return out


def to_report(result: EnvResult, items: list[Item], min_severity: Severity = Severity.LOW,
              select: tuple[str, ...] = (), ignore: tuple[str, ...] = ()) -> Report:
    from mlscan import registry

    def keep(f: Finding) -> bool:
        if f.severity.rank < min_severity.rank:
            return False
        if select and not registry.matches(f.rule_id, select):
            return False
        return not (ignore and registry.matches(f.rule_id, ignore))

    seen: set[tuple[object, ...]] = set()
    findings: list[Finding] = []
    for f in sorted((i.finding for i in items), key=Finding.sort_key):
        k = (f.rule_id, f.path, f.member, f.line, f.evidence, f.message)
        if k not in seen and keep(f):
            seen.add(k)
            findings.append(f)
    summary = Summary(files=result.files, bytes=result.bytes, seconds=round(result.seconds, 3))
    return Report(findings=tuple(findings), summary=summary,
                  roots=tuple(os.fspath(d) for d in result.target.site_dirs))
