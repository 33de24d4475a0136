"""Walk the scan paths: never follow a symlink out of the root, never open FIFOs or devices,
sniff every regular file's kind from its first bytes."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mlscan.kinds import HEAD_SIZE, MODEL_EXTENSIONS, Kind, extension, sniff, trailing_zip
from mlscan.model import Finding, Severity
from mlscan.rulesets.meta import MALFORMED, NOT_SCANNED

# Folders that never hold user artifacts and are expensive to walk.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".ruff_cache",
                       ".pytest_cache", "node_modules", ".tox", ".nox"})


@dataclass(frozen=True)
class Artifact:
    fs_path: Path
    path: str
    """Display path: relative to the scan root when under it (POSIX separators)."""
    kind: Kind
    size: int


@dataclass
class Discovery:
    artifacts: list[Artifact]
    findings: list[Finding]
    """Paths reported instead of scanned (symlinks out of root, FIFOs, unreadable...)."""


def display_path(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
        text = rel.as_posix()
        return text if text != "." else path.name
    except ValueError:
        return path.as_posix()


def is_excluded(display: str, patterns: Iterable[str]) -> bool:
    parts = display.split("/")
    for pattern in patterns:
        pat = pattern.rstrip("/")
        if fnmatch.fnmatch(display, pat) or any(fnmatch.fnmatch(p, pat) for p in parts):
            return True
        if display.startswith(pat + "/"):
            return True
    return False


def _safe_name(path: Path) -> str:
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")


def discover(paths: Iterable[Path], exclude: Iterable[str] = (), *,
             base: Path | None = None) -> Discovery:
    """`base` is what display paths are relative to (default: the working directory)."""
    exclude = tuple(exclude)
    base = (base or Path.cwd()).absolute()
    out = Discovery([], [])
    seen: set[tuple[int, int]] = set()
    for given in paths:
        given = given.absolute()
        root = given if given.is_dir() else given.parent
        # Paths are shown relative to the working directory when the scan root lies under
        # it, else relative to the scan root itself.
        rel_to = base if (given == base or base in given.parents) else root
        for entry in _walk(given, root, out, rel_to):
            display = display_path(entry, rel_to)
            if is_excluded(display, exclude):
                continue
            _consider(entry, display, root, out, seen)
    return out


def _walk(given: Path, root: Path, out: Discovery, base: Path) -> Iterator[Path]:
    if given.is_symlink() or not given.is_dir():
        yield given
        return
    stack = [given]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            out.findings.append(NOT_SCANNED.finding(
                display_path(folder, base), f"cannot list directory: {exc.strerror or exc}",
                evidence="unreadable-directory"))
            continue
        subdirs = []
        for e in entries:
            p = Path(e.path)
            if e.is_dir(follow_symlinks=False):
                if e.name in SKIP_DIRS:
                    continue
                if (p / "pyvenv.cfg").is_file() and p != given:
                    # an installed environment is not repository content: `mlscan env`
                    # verifies it against its RECORD files far better than a code scan
                    out.findings.append(NOT_SCANNED.finding(
                        display_path(p, base), "virtual environment not scanned; verify it "
                        f"with `mlscan env --path {display_path(p, base)}/lib/python*/"
                        "site-packages`", evidence="virtualenv", severity=Severity.LOW))
                    continue
                subdirs.append(p)
            else:
                yield p
        stack.extend(reversed(subdirs))


def _consider(path: Path, display: str, root: Path, out: Discovery,
              seen: set[tuple[int, int]]) -> None:
    try:
        st = path.lstat()
    except OSError as exc:
        out.findings.append(NOT_SCANNED.finding(display, f"cannot stat: {exc.strerror or exc}",
                                                evidence="unreadable"))
        return
    if stat.S_ISLNK(st.st_mode):
        _consider_symlink(path, display, root, out, seen)
        return
    _consider_regular(path, display, st, out, seen)


def _consider_symlink(path: Path, display: str, root: Path, out: Discovery,
                      seen: set[tuple[int, int]]) -> None:
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        reason = "symlink loop or dangling symlink"
        out.findings.append(NOT_SCANNED.finding(display, f"{reason}; not followed",
                                                evidence="symlink"))
        return
    root_real = root.resolve()
    if target != root_real and root_real not in target.parents:
        out.findings.append(NOT_SCANNED.finding(
            display, f"symlink points outside the scan root (to {_safe_name(target)}); not "
            "followed. Scan the target directly if you trust it.", evidence="symlink-out-of-root"))
        return
    if target.is_dir():
        return  # the directory itself is walked from the root
    try:
        st = target.stat()
    except OSError:
        return
    _consider_regular(target, display, st, out, seen)


def _consider_regular(path: Path, display: str, st: os.stat_result, out: Discovery,
                      seen: set[tuple[int, int]]) -> None:
    if not stat.S_ISREG(st.st_mode):
        what = "FIFO" if stat.S_ISFIFO(st.st_mode) else "special file"
        out.findings.append(NOT_SCANNED.finding(display, f"{what}; never opened",
                                                evidence="special-file"))
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return
    seen.add(key)
    try:
        with open(path, "rb") as fh:
            kind = sniff(fh.read(HEAD_SIZE), path.name)
            if kind is Kind.UNKNOWN and st.st_size > 22:
                fh.seek(0)
                kind = trailing_zip(fh)
    except OSError as exc:
        out.findings.append(NOT_SCANNED.finding(display, f"cannot read: {exc.strerror or exc}",
                                                evidence="unreadable"))
        return
    if kind is Kind.UNKNOWN:
        if extension(path.name) in MODEL_EXTENSIONS:
            why = "empty file" if st.st_size == 0 else "content matches no known model format"
            out.findings.append(MALFORMED.finding(
                display, f"{why} (extension {extension(path.name)} promises a model)",
                evidence="unknown-format"))
        return
    out.artifacts.append(Artifact(path, display, kind, st.st_size))
