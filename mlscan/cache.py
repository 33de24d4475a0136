"""Result cache: re-running on unchanged files is near-free.

An entry is keyed by the file's content hash, its display path and kind, the analysis layer
(per-file or a batch analyzer), the rule-set version (rules, rule data, mlscan's own code and
version) and the scan settings. Results containing a limit, analyzer or read error (MLS902-904)
are never stored: a slow machine or a bug must not become a cached verdict.
Only self-contained kinds are cached; JSON/YAML/Jinja/SavedModel analysis may look at
sibling files, so their results are recomputed every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from mlscan import __version__
from mlscan.context import MiB, Settings
from mlscan.kinds import Kind
from mlscan.model import Confidence, Finding, Severity

_MAX_SUBFOLDERS = 256  # (a parent with thousands of folders: stamp the first 256 only)
NEVER_CACHE = frozenset({"MLS902", "MLS903", "MLS904"})
CACHEABLE = frozenset({
    Kind.PICKLE, Kind.ZIP, Kind.TAR, Kind.SEVENZ, Kind.GZIP, Kind.BZIP2, Kind.XZ, Kind.LZMA,
    Kind.ZLIB, Kind.NUMPY, Kind.HDF5, Kind.SAFETENSORS, Kind.GGUF, Kind.ONNX, Kind.PYTHON,
    Kind.NOTEBOOK,
})
HASH_LIMIT = 64 * MiB
"""Larger files are keyed by their stat (size, mtime, ctime, inode): hashing a 10 GB checkpoint
would cost far more than scanning its few KB of pickle."""
_LAYOUT = "v1"


def default_dir() -> Path:
    """$MLSCAN_CACHE_DIR, else $XDG_CACHE_HOME/mlscan, else ~/.cache/mlscan."""
    explicit = os.environ.get("MLSCAN_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg if xdg and os.path.isabs(xdg) else Path.home() / ".cache") / "mlscan"


class Hasher:
    """sha256 of files, computed at most once per run (shared by cache keys and allow-sha256)."""

    def __init__(self) -> None:
        self._done: dict[Path, str] = {}
        self._stamps: dict[Path, str] = {}
        self._subs: dict[Path, list[Path]] = {}

    def sha256(self, path: Path) -> str | None:
        if path not in self._done:
            digest = hashlib.sha256()
            try:
                if not stat.S_ISREG(path.lstat().st_mode):
                    return None  # never open FIFOs or devices, never follow links here
                with open(path, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
            except OSError:
                return None
            self._done[path] = digest.hexdigest()
        return self._done[path]

    def identity(self, path: Path) -> str | None:
        """Content hash for files up to HASH_LIMIT, a stat key above it."""
        try:
            st = path.stat()
        except OSError:
            return None
        if st.st_size > HASH_LIMIT:
            return f"stat:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
        return self.sha256(path)

    def neighbourhood(self, path: Path) -> str:
        """Size and mtime of the .py files the Python analyzer may read beside `path`: its
        folder, the parent folder and the parent's other subfolders (re-exported aliases and
        config defaults come from sibling modules, so editing `utils.py` must re-scan
        `train.py`). Modules deeper than that are not covered."""
        folder = path.parent
        parent = folder.parent
        parts = [self._folder_stamp(folder), self._folder_stamp(parent)]
        parts += [self._folder_stamp(sub) for sub in self._subfolders(parent) if sub != folder]
        return hashlib.sha256("\x1e".join(parts).encode("utf-8", "surrogateescape")).hexdigest()

    def _folder_stamp(self, folder: Path) -> str:
        if folder not in self._stamps:
            rows = []
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        if entry.name.endswith(".py") and entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            rows.append(f"{entry.name}|{st.st_size}|{st.st_mtime_ns}")
            except OSError:
                pass
            self._stamps[folder] = f"{folder}:" + ",".join(sorted(rows))
        return self._stamps[folder]

    def _subfolders(self, folder: Path) -> list[Path]:
        if folder not in self._subs:
            try:
                with os.scandir(folder) as it:
                    subs = [Path(e.path) for e in it if e.is_dir(follow_symlinks=False)]
            except OSError:
                subs = []
            self._subs[folder] = sorted(subs)[:_MAX_SUBFOLDERS]
        return self._subs[folder]


@cache
def ruleset_version() -> str:
    """Changes whenever a rule, rule data or mlscan's code changes (cheap: stats, small reads)."""
    # Rules are defined in mlscan's modules and rule data: hashing those covers every rule
    # without importing all of them (a scan loads only the analyzers it needs).
    h = hashlib.sha256(__version__.encode())
    package = Path(__file__).resolve().parent
    from mlscan.resources import rules_dir

    try:
        data_root: Path | None = rules_dir()
    except FileNotFoundError:
        data_root = None
    for root, read in ((package, False), (data_root, True)):
        if root is None:
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file()
                           and "__pycache__" not in p.parts):
            if read:
                h.update(path.read_bytes())
            elif path.suffix == ".py":
                st = path.stat()
                h.update(f"{path.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


class Cache:
    def __init__(self, directory: Path, settings: Settings, hasher: Hasher) -> None:
        self.directory = directory / _LAYOUT
        self.hasher = hasher
        self.salt = hashlib.sha256(f"{ruleset_version()}|{settings!r}".encode()).hexdigest()
        self.hits = 0

    def key(self, fs_path: Path, display: str, kind: Kind, layer: str) -> str | None:
        if kind not in CACHEABLE:
            return None
        ident = self.hasher.identity(fs_path)
        if ident is None:
            return None
        if layer == "file" and kind in (Kind.PYTHON, Kind.NOTEBOOK):  # (not semgrep: per file)
            ident += "|" + self.hasher.neighbourhood(fs_path)
        text = "\x1f".join((self.salt, layer, display, kind.value, ident))
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def _file(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str | None, display: str) -> list[Finding] | None:
        if key is None:
            return None
        try:
            rows = json.loads(self._file(key).read_text(encoding="utf-8"))
            found = [_finding(row, display) for row in rows]
        except (OSError, ValueError, TypeError, KeyError):
            return None  # missing or damaged entry: recompute
        self.hits += 1
        return found

    def put(self, key: str | None, findings: Iterable[Finding]) -> None:
        items = list(findings)
        if key is None or any(f.rule_id in NEVER_CACHE for f in items):
            return
        rows = [{k: (v.value if isinstance(v, Severity | Confidence) else v)
                 for k, v in f.to_fields().items() if k != "path"} for f in items]
        target = self._file(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(rows, fh)
            os.replace(tmp, target)  # atomic: concurrent runs never read half an entry
        except OSError:
            pass  # a read-only or full cache dir only costs speed


def _finding(row: dict[str, object], display: str) -> Finding:
    fields = dict(row)
    fields["severity"] = Severity(fields["severity"])
    fields["confidence"] = Confidence(fields["confidence"])
    return Finding(path=display, **fields)  # type: ignore[arg-type]
