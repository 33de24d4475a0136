"""`mlscan env --lock FILE` / `--verify-lock FILE`: accept files outside any RECORD by sha256.

The lock holds one entry per accepted subject (a display path, or `env:NAME` for a variable)
with the sha256 of its current content. Verifying drops findings whose subject still hashes the
same, turns changed ones into MLS508 and notes accepted files that disappeared.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlscan import __version__
from mlscan.envcheck_rules import LOCK_MISMATCH
from mlscan.model import Finding, Severity

LOCK_VERSION = 1


class LockError(Exception):
    """The lock file cannot be read, parsed or written."""


@dataclass(frozen=True)
class Item:
    """A finding plus what a lock needs to accept it."""

    finding: Finding
    key: str | None = None
    """Lock subject: display path or `env:NAME`; None when the finding cannot be accepted."""
    sha256: str | None = None
    abs_path: str | None = None


def write_lock(path: Path, items: Sequence[Item], site_dirs: Sequence[Path],
               bytecode: Mapping[str, tuple[str, str]] | None = None) -> int:
    """Write every lockable item (and caches proven equal to their sources, so a later
    `--verify-lock --bytecode` recompiles only what changed); returns the entry count."""
    entries: dict[str, dict[str, object]] = {}
    for item in items:
        if item.key is None or item.sha256 is None:
            continue
        entries.setdefault(item.key, {"key": item.key, "rule_id": item.finding.rule_id,
                                      "sha256": item.sha256, "abs_path": item.abs_path})
    doc = {"version": LOCK_VERSION, "tool": f"mlscan {__version__}",
           "site_packages": [os.fspath(s) for s in site_dirs],
           "entries": [entries[k] for k in sorted(entries)],
           "bytecode": {k: list(v) for k, v in sorted((bytecode or {}).items())}}
    try:
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise LockError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return len(entries)


def read_lock(path: Path) -> dict[str, dict[str, object]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LockError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise LockError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != LOCK_VERSION:
        raise LockError(f"{path}: not an mlscan env lock (version {LOCK_VERSION})")
    raw = doc.get("entries")
    if not isinstance(raw, list):
        raise LockError(f"{path}: 'entries' must be a list")
    out: dict[str, dict[str, object]] = {}
    for entry in raw:
        if not (isinstance(entry, dict) and isinstance(entry.get("key"), str)
                and isinstance(entry.get("sha256"), str)):
            raise LockError(f"{path}: malformed entry {entry!r:.80}")
        out[entry["key"]] = entry
    return out


def read_bytecode(path: Path) -> dict[str, tuple[str, str]]:
    """Caches a lock records as proven equal to their sources: path -> (cache, source) sha256."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # read_lock reports the problem
    raw = doc.get("bytecode") if isinstance(doc, dict) else None
    if not isinstance(raw, dict):
        return {}
    return {k: (v[0], v[1]) for k, v in raw.items()
            if isinstance(k, str) and isinstance(v, list) and len(v) == 2
            and all(isinstance(x, str) for x in v)}


def apply_lock(path: Path, items: Sequence[Item]) -> list[Item]:
    """Filter `items` through the lock at `path`."""
    lock = read_lock(path)
    out: list[Item] = []
    seen: set[str] = set()
    for item in items:
        entry = lock.get(item.key) if item.key is not None else None
        if entry is None:
            out.append(item)
            continue
        seen.add(str(item.key))
        if item.sha256 is not None and item.sha256 == entry["sha256"]:
            continue  # accepted and unchanged
        f = item.finding
        if not f.rule_id.startswith("MLS5"):
            out.append(item)  # a code finding in a changed file: the MLS5xx item says "changed"
            continue
        severity = f.severity if f.severity.rank >= Severity.HIGH.rank else Severity.HIGH
        out.append(Item(LOCK_MISMATCH.finding(
            f.path, f"changed since the lock was written ({f.rule_id}: {f.message})",
            evidence=f"sha256 {entry['sha256']} -> {item.sha256 or 'unreadable'}",
            line=f.line, severity=severity), item.key, item.sha256, item.abs_path))
    for key, entry in lock.items():
        abs_path = entry.get("abs_path")
        if key in seen or not isinstance(abs_path, str) or os.path.lexists(abs_path):
            continue
        out.append(Item(LOCK_MISMATCH.finding(
            key, "accepted in the lock but no longer present (the lock is stale)",
            evidence=f"sha256 {entry['sha256']}", severity=Severity.LOW)))
    return out
