"""Baseline files: findings accepted today, matched later by fingerprint (rule, path, archive
member, evidence: no line numbers or offsets, so moving code does not resurface them).

Paths are stored relative to the baseline file's folder, so the match does not depend on the
directory mlscan runs from. Repeats are counted: a second copy of an accepted finding is new.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlscan import __version__
from mlscan.model import Finding

FORMAT_VERSION = 1
DEFAULT_NAME = ".mlscan-baseline.json"


class BaselineError(Exception):
    """The baseline file is missing or not a baseline (exit code 2)."""


@dataclass(frozen=True)
class Baseline:
    root: Path
    """Folder the stored paths are relative to (the baseline file's folder)."""
    base: Path
    """Folder the scan's display paths are relative to."""
    fingerprints: tuple[str, ...]

    def key(self, finding: Finding) -> str:
        return rebased(finding, self.base, self.root).fingerprint

    def counts(self) -> Counter[str]:
        return Counter(self.fingerprints)


def rebased(finding: Finding, base: Path, root: Path) -> Finding:
    """The finding with its path made relative to `root` (when it lies under it)."""
    full = Path(os.path.normpath(base.absolute() / finding.path))
    try:
        rel = full.relative_to(root.absolute()).as_posix()
    except ValueError:
        return finding
    return finding if rel == finding.path else finding.with_path(rel)


def load(path: Path, base: Path) -> Baseline:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read baseline: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise BaselineError(f"{path}: not a JSON baseline: {exc}") from None
    if not isinstance(doc, dict) or doc.get("tool") != "mlscan" or not isinstance(
            doc.get("findings"), list):
        raise BaselineError(f"{path}: not an mlscan baseline (write one with "
                            "`mlscan baseline write`)")
    if doc.get("version") != FORMAT_VERSION:
        raise BaselineError(f"{path}: baseline format {doc.get('version')!r} is not supported "
                            f"(expected {FORMAT_VERSION})")
    prints = []
    for entry in doc["findings"]:
        fp = entry.get("fingerprint") if isinstance(entry, dict) else None
        if not isinstance(fp, str):
            raise BaselineError(f"{path}: baseline entry without a fingerprint: {entry!r}")
        prints.append(fp)
    return Baseline(root=path.absolute().parent, base=base.absolute(), fingerprints=tuple(prints))


def render(findings: Iterable[Finding], path: Path, base: Path) -> str:
    """The baseline file for `findings`, readable in review: one entry per finding."""
    root = path.absolute().parent
    entries = []
    for f in findings:
        r = rebased(f, base, root)
        entry: dict[str, object] = {"fingerprint": r.fingerprint, "rule_id": r.rule_id,
                                    "path": r.path}
        if r.member:
            entry["member"] = r.member
        if r.evidence:
            entry["evidence"] = r.evidence[:200]
        entries.append(entry)
    entries.sort(key=lambda e: (str(e["path"]), str(e["rule_id"]), str(e["fingerprint"])))
    doc = {"tool": "mlscan", "version": FORMAT_VERSION, "mlscan_version": __version__,
           "findings": entries}
    return json.dumps(doc, indent=2) + "\n"  # ASCII: undecodable file names stay writable
