"""Installed distributions as their metadata describes them: dist-info, RECORD, direct_url.json.

Parsed directly (not through importlib.metadata) so `--path` and `--python` targets work the same
way, and so a malformed RECORD becomes a reported problem instead of an exception.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from mlscan.envcheck_hash import read_regular

_MAX_RECORD = 64 * 1024 * 1024


@dataclass(frozen=True)
class RecordEntry:
    path: str
    """As written in RECORD (relative to the site directory, '/'-separated, may start '..')."""
    algo: str | None
    digest: str | None
    """urlsafe base64 without padding, as RECORD stores it."""
    size: int | None

    def fs_path(self, site_dir: Path) -> str:
        return os.path.normpath(os.path.join(site_dir, self.path))


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    site_dir: Path
    info_dir: Path
    """The .dist-info / .egg-info folder, or the .egg / .egg-link for legacy installs."""
    layout: str
    """'dist-info', 'egg-info', 'egg' or 'egg-link'."""
    entries: tuple[RecordEntry, ...] = ()
    record_problem: str | None = None
    """Why the RECORD could not be used (missing, unreadable, malformed)."""
    editable: str | None = None
    """Source location of an editable install (direct_url.json), else None."""
    bad_rows: tuple[str, ...] = field(default=())
    top_level: tuple[str, ...] = ()
    """Import names it claims (top_level.txt, else its normalized name): used only to avoid
    reporting the folders of an unverifiable distribution a second time as unowned."""

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}".strip()


def _read_limited(path: Path) -> bytes:
    data = read_regular(path, _MAX_RECORD + 1)
    if len(data) > _MAX_RECORD:
        raise ValueError(f"larger than {_MAX_RECORD} bytes")
    return data


def _metadata(info_dir: Path, fallback: str) -> tuple[str, str]:
    """Name and Version from the METADATA/PKG-INFO headers; the folder name if unreadable."""
    stem = info_dir.name.rsplit(".", 1)[0]
    name, _, version = stem.partition("-")
    name = name or fallback
    for fname in ("METADATA", "PKG-INFO"):
        try:
            head = read_regular(info_dir / fname, 16384).decode("utf-8", "replace")
        except OSError:
            continue
        found: dict[str, str] = {}
        for line in head.splitlines():
            if not line.strip():
                break
            key, sep, value = line.partition(":")
            if sep and key in ("Name", "Version") and key not in found:
                found[key] = value.strip()
        return found.get("Name", name), found.get("Version", version.split("-")[0])
    return name, version.split("-")[0]


def parse_record(data: bytes) -> tuple[list[RecordEntry], list[str]]:
    """Rows of a RECORD file; malformed rows are returned separately, never dropped silently."""
    entries: list[RecordEntry] = []
    bad: list[str] = []
    text = data.decode("utf-8", "surrogateescape")
    for row in csv.reader(io.StringIO(text, newline="")):
        if not row or not row[0].strip():
            continue
        path, hash_field, size_field = [*row, "", ""][:3]
        algo = digest = None
        if hash_field:
            algo, sep, digest = hash_field.partition("=")
            if not sep or not digest:
                bad.append(path)
                algo = digest = None
        size: int | None = None
        if size_field.strip():
            try:
                size = int(size_field)
            except ValueError:
                bad.append(path)
        entries.append(RecordEntry(path=path, algo=algo and algo.lower(), digest=digest,
                                   size=size))
    return entries, bad


def _editable_from(info_dir: Path) -> str | None:
    try:
        raw = json.loads(read_regular(info_dir / "direct_url.json", 1 << 20))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    dir_info = raw.get("dir_info")
    if isinstance(dir_info, dict) and dir_info.get("editable"):
        return str(raw.get("url", "?"))
    return None


def _top_level(info_dir: Path, name: str) -> tuple[str, ...]:
    names = {name.lower().replace("-", "_").replace(".", "_")}
    try:
        text = read_regular(info_dir / "top_level.txt", 1 << 20).decode("utf-8", "replace")
        names.update(line.strip().split("/")[0] for line in text.splitlines() if line.strip())
    except OSError:
        pass
    return tuple(sorted(names))


def _claims(dist: Distribution) -> Distribution:
    if dist.record_problem is None:
        return dist
    return replace(dist, top_level=_top_level(dist.info_dir, dist.name))


def _dist_info(site_dir: Path, info_dir: Path) -> Distribution:
    name, version = _metadata(info_dir, info_dir.name)
    editable = _editable_from(info_dir)
    record = info_dir / "RECORD"
    try:
        data = _read_limited(record)
    except FileNotFoundError:
        return Distribution(name, version, site_dir, info_dir, "dist-info",
                            record_problem="no RECORD file", editable=editable)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return Distribution(name, version, site_dir, info_dir, "dist-info",
                            record_problem=f"RECORD unreadable: {reason}", editable=editable)
    try:
        entries, bad = parse_record(data)
    except csv.Error as exc:
        return Distribution(name, version, site_dir, info_dir, "dist-info",
                            record_problem=f"RECORD malformed: {exc}", editable=editable)
    return Distribution(name, version, site_dir, info_dir, "dist-info", tuple(entries),
                        editable=editable, bad_rows=tuple(bad))


def _legacy(site_dir: Path, entry: os.DirEntry[str]) -> Distribution:
    path = Path(entry.path)
    if entry.name.endswith(".egg-link"):
        try:
            text = read_regular(path, 1 << 16).decode("utf-8", "replace")
            target = text.splitlines()[0].strip()
        except (OSError, IndexError):
            target = "?"
        return Distribution(entry.name[:-9], "", site_dir, path, "egg-link",
                            record_problem="legacy develop install (.egg-link)", editable=target)
    if entry.name.endswith(".egg"):
        name, version = _metadata(path / "EGG-INFO", entry.name[:-4])
        return Distribution(name, version, site_dir, path, "egg",
                            record_problem="legacy .egg install has no RECORD")
    name, version = _metadata(path, entry.name[:-9])
    return Distribution(name, version, site_dir, path, "egg-info",
                        record_problem="legacy .egg-info install has no RECORD with hashes")


def find_distributions(site_dir: Path) -> list[Distribution]:
    """Every distribution installed directly in `site_dir`, sorted by folder name."""
    out: list[Distribution] = []
    try:
        entries = sorted(os.scandir(site_dir), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        name = entry.name
        if name.endswith(".dist-info") and entry.is_dir(follow_symlinks=False):
            out.append(_claims(_dist_info(site_dir, Path(entry.path))))
        elif name.endswith((".egg-info", ".egg", ".egg-link")):
            out.append(_claims(_legacy(site_dir, entry)))
    return out
