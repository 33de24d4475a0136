"""`mlscan env`: verify installed distributions against their RECORD hashes and list every way
code runs at interpreter start-up. Nothing from the checked environment is imported or run.

Data flow: target (site dirs) -> distributions + RECORD -> parallel hashing -> findings for
modified / missing / unlisted files, unverifiable distributions, start-up hooks -> Items (findings
plus lock subjects) -> optional lock -> Report.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlscan import envcheck_hooks as hooks
from mlscan.envcheck_hash import HashResult, ParallelHasher, hash_file, hash_many, record_b64
from mlscan.envcheck_lock import Item
from mlscan.envcheck_record import Distribution, RecordEntry, find_distributions
from mlscan.envcheck_rules import (
    BYTECODE_DIFFERS,
    ENV_UNREADABLE,
    FILE_ADDED,
    FILE_MISSING,
    FILE_MODIFIED,
    PTH_EXEC,
    SITECUSTOMIZE,
    STARTUP_ENV,
    UNVERIFIABLE,
)
from mlscan.envcheck_target import TargetEnv
from mlscan.envcheck_walk import (
    is_code,
    is_ml_path,
    legit_changing,
    unlisted_in_owned,
    unowned_top_level,
    walk_files,
)
from mlscan.model import Finding, Severity

# Written or rewritten by installers after RECORD: never compared.
_MUTABLE_META = frozenset({"RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER", "REQUESTED",
                           "direct_url.json"})
_WEAK_OR_UNKNOWN = frozenset({"md5", "sha1"})
_SUPPORTED = frozenset(hashlib.algorithms_guaranteed) - _WEAK_OR_UNKNOWN - {"shake_128",
                                                                            "shake_256"}


@dataclass
class EnvResult:
    target: TargetEnv
    items: list[Item] = field(default_factory=list)
    distributions: int = 0
    files: int = 0
    bytes: int = 0
    hash_seconds: float = 0.0
    seconds: float = 0.0
    hook_files: list[str] = field(default_factory=list)
    bytecode_ok: dict[str, tuple[str, str]] = field(default_factory=dict)
    """--bytecode: display path -> (cache sha256, source sha256) of caches proven equal."""
    """Absolute paths of Python files worth a code scan (hooks, modified or added code)."""


@dataclass(frozen=True)
class _Job:
    dist: Distribution
    entry: RecordEntry
    abs_path: str


_HEX = re.compile(r"[0-9a-fA-F]+")
_PLAIN = re.compile(r"(?!\.{1,2}(?:/|$))[^/\\]+(?:/(?!\.{1,2}(?:/|$))[^/\\]+)*")
_SO = re.compile(r"\.(?:so|pyd)(?:\.[0-9]+)*$")


def _as_b64(digest: str, algo: str) -> str:
    """RECORD digests are urlsafe base64 without padding; some system packagers write hex."""
    digest = digest.rstrip("=")
    if _HEX.fullmatch(digest) and len(digest) == 2 * hashlib.new(algo).digest_size:
        return record_b64(bytes.fromhex(digest))
    return digest


def _system_managed(dist: Distribution) -> bool:
    """Installed by dpkg & co: no INSTALLER file, in a `dist-packages` directory."""
    return dist.site_dir.name == "dist-packages" and not (dist.info_dir / "INSTALLER").exists()


def _sha_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


class _Checker:
    def __init__(self, target: TargetEnv, environ: Mapping[str, str], workers: int) -> None:
        self.t = target
        self.environ = environ
        self.workers = workers
        self.res = EnvResult(target)
        self.recorded: set[str] = set()
        self.owned: dict[Path, set[str]] = {d: set() for d in target.site_dirs}
        self.claimed: dict[Path, set[str]] = {d: set() for d in target.site_dirs}
        self.owner: dict[str, Distribution] = {}
        self.bad_hash: set[str] = set()
        """Recorded files that are modified, missing or unreadable."""
        self.verified_py: list[str] = []
        self.with_record: list[Distribution] = []
        """Recorded .py files whose hash matched (sources for the byte-code check)."""
        self.source_sha: dict[str, str] = {}

    def add(self, finding: Finding, key: str | None = None, sha256: str | None = None,
            abs_path: str | None = None) -> None:
        self.res.items.append(Item(finding, key, sha256, abs_path))

    # -- distributions -------------------------------------------------------------------
    def collect(self, hasher: ParallelHasher | None = None) -> list[_Job]:
        """Parse every RECORD; with a hasher, files are hashed while later RECORDs parse."""
        jobs: list[_Job] = []
        for site_dir in self.t.site_dirs:
            for dist in find_distributions(site_dir):
                self.res.distributions += 1
                self.claimed[site_dir].update(dist.top_level)
                if dist.entries:
                    self.with_record.append(dist)
                new = self._dist_jobs(dist)
                if hasher is not None:
                    for job in new:
                        hasher.add(job.abs_path, job.entry.algo or "sha256")
                jobs.extend(new)
        return jobs

    def _dist_jobs(self, dist: Distribution) -> list[_Job]:
        where = self.t.display(dist.info_dir)
        if dist.record_problem:
            self.add(UNVERIFIABLE.finding(where, f"{dist.label}: {dist.record_problem}; its "
                                          "files cannot be verified", evidence=dist.label))
        if dist.editable:
            self.add(UNVERIFIABLE.finding(where, f"{dist.label}: editable install; code runs "
                                          f"from {dist.editable}, which no RECORD covers",
                                          evidence=f"editable {dist.editable}"))
        if dist.bad_rows:
            self.add(ENV_UNREADABLE.finding(
                where + "/RECORD", f"{len(dist.bad_rows)} malformed RECORD row(s)",
                evidence=", ".join(dist.bad_rows[:3])))
        jobs: list[_Job] = []
        unhashed: list[str] = []
        site, info = os.fspath(dist.site_dir), os.fspath(dist.info_dir)
        owned = self.owned.get(dist.site_dir)
        for entry in dist.entries:
            rel = entry.path
            if _PLAIN.fullmatch(rel):  # the common case: no '..', '.', '//' or backslashes
                abs_path = f"{site}/{rel}"
                parts = tuple(rel.split("/"))
            else:
                abs_path = entry.fs_path(dist.site_dir)
                parts = tuple(p for p in rel.replace("\\", "/").split("/") if p)
            if not parts:
                continue
            self.recorded.add(abs_path)
            self.owner.setdefault(abs_path, dist)
            if (owned is not None and len(parts) >= 2 and parts[0] not in ("..", ".")
                    and not os.path.isabs(rel) and abs_path[:len(info)] != info):
                owned.add(parts[0])
            if legit_changing(parts) or (parts[-1] in _MUTABLE_META
                                         and os.path.dirname(abs_path) == info):
                continue
            if entry.algo is None or entry.algo not in _SUPPORTED:
                if is_code(parts[-1]):
                    unhashed.append(entry.path)
                if not os.path.lexists(abs_path):
                    self._missing(dist, abs_path)
                continue
            jobs.append(_Job(dist, entry, abs_path))
        if unhashed:
            self.add(UNVERIFIABLE.finding(
                where, f"{dist.label}: {len(unhashed)} code file(s) in RECORD without a "
                "supported hash", evidence=", ".join(unhashed[:3])))
        return jobs

    # -- hashing --------------------------------------------------------------------------
    def verify(self, jobs: list[_Job], results: dict[str, HashResult]) -> None:
        for job in jobs:
            r = results[job.abs_path]
            shown = self.t.display(job.abs_path)
            if r.missing:
                self._missing(job.dist, job.abs_path)
                continue
            if r.problem is not None or r.b64 is None:
                self.bad_hash.add(job.abs_path)
                self.add(ENV_UNREADABLE.finding(shown, f"cannot verify: {r.problem}",
                                                evidence=r.problem or "unreadable"))
                continue
            self.res.files += 1
            self.res.bytes += r.size
            want = _as_b64(job.entry.digest or "", job.entry.algo or "sha256")
            size_ok = job.entry.size is None or job.entry.size == r.size
            if want == r.b64 and size_ok:
                if job.abs_path.endswith(".py") and r.sha256:
                    self.verified_py.append(job.abs_path)
                    self.source_sha[job.abs_path] = r.sha256
                continue
            self.bad_hash.add(job.abs_path)
            name = os.path.basename(job.abs_path)
            ml = is_ml_path(shown) and is_code(name)
            severity = Severity.CRITICAL if ml else None
            detail = (f"size {job.entry.size} -> {r.size}" if not size_ok
                      else f"{job.entry.algo} {want} -> {r.b64}")
            if _system_managed(job.dist) and _SO.search(name):
                # Debian/Ubuntu strip native libraries after the wheel's RECORD was written.
                severity = Severity.MEDIUM
                detail += "; installed by the system package manager, which strips native " \
                          "libraries: verify with `dpkg --verify`"
            self.add(FILE_MODIFIED.finding(
                shown, f"{job.dist.label}: content differs from RECORD ({detail})",
                evidence=f"{job.entry.algo}={r.b64}", severity=severity),
                shown, r.sha256, job.abs_path)
            if name.endswith(".py"):
                self.res.hook_files.append(job.abs_path)

    def _missing(self, dist: Distribution, abs_path: str) -> None:
        self.bad_hash.add(abs_path)
        shown = self.t.display(abs_path)
        code = is_code(os.path.basename(abs_path))
        severity = Severity.HIGH if code and is_ml_path(shown) else None
        note = ""
        if not code and _system_managed(dist):
            severity, note = Severity.LOW, " (system packages relocate scripts)"
        self.add(FILE_MISSING.finding(shown, f"{dist.label}: listed in RECORD but missing{note}",
                                      evidence="missing", severity=severity))

    # -- unlisted files ---------------------------------------------------------------------
    def added_metadata(self) -> None:
        """Files added to a dist-info folder after installation. `entry_points.txt` matters:
        plugin hosts (pytest, torch device backends, console scripts) load what it names."""
        for dist in self.with_record:
            for path in walk_files(os.fspath(dist.info_dir)):
                name = os.path.basename(path)
                if path in self.recorded or name in _MUTABLE_META:
                    continue
                shown = self.t.display(path)
                plugins = name == "entry_points.txt"
                self.add(FILE_ADDED.finding(
                    shown, f"{dist.label}: metadata file added after installation"
                    + ("; entry points it names are loaded by plugin hosts" if plugins else ""),
                    evidence=name, severity=Severity.HIGH if plugins else Severity.LOW),
                    shown, hash_file(path).sha256, path)

    def unlisted(self) -> None:
        for site_dir in self.t.site_dirs:
            owned = self.owned.get(site_dir, set())
            for u in unlisted_in_owned(site_dir, owned, self.recorded):
                shown = self.t.display(u.path)
                ml = is_ml_path(shown)
                r = hash_file(u.path)
                self.add(FILE_ADDED.finding(
                    shown, "not listed in any RECORD, inside a folder owned by an installed "
                    "distribution", evidence=os.path.basename(u.path),
                    severity=Severity.CRITICAL if ml else None), shown, r.sha256, u.path)
                if u.path.endswith(".py"):
                    self.res.hook_files.append(u.path)
            claimed = frozenset(self.claimed.get(site_dir, set()))
            for o in unowned_top_level(site_dir, owned, self.recorded, claimed):
                self._unowned(o.path, o.is_dir, o.code_files)

    def _unowned(self, path: str, is_dir: bool, code_files: tuple[str, ...]) -> None:
        shown = self.t.display(path)
        name = os.path.basename(path)
        if not is_dir:
            r = hash_file(path)
            # virtualenv writes _virtualenv.py without a RECORD: show it, but quietly.
            sev = Severity.LOW if name == "_virtualenv.py" else None
            self.add(FILE_ADDED.finding(shown, "top-level module not listed in any RECORD",
                                        evidence=name, severity=sev), shown, r.sha256, path)
            if name.endswith(".py"):
                self.res.hook_files.append(path)
            return
        combined = hashlib.sha256()
        for f in code_files:
            combined.update(f"{os.path.relpath(f, path)}\0{hash_file(f).sha256}\n".encode(
                "utf-8", "surrogateescape"))
        first = ", ".join(os.path.relpath(f, path) for f in code_files[:3])
        self.add(FILE_ADDED.finding(
            shown, f"package folder with {len(code_files)} code file(s) that no installed "
            f"distribution owns ({first})", evidence=name, severity=Severity.MEDIUM),
            shown, combined.hexdigest(), path)

    # -- start-up hooks ---------------------------------------------------------------------
    def _verified_owner(self, abs_path: str) -> Distribution | None:
        if abs_path in self.bad_hash:
            return None
        return self.owner.get(abs_path)

    def pth(self) -> list[Path]:
        extra: list[Path] = []
        for path in hooks.pth_files(self.t.site_dirs):
            info = hooks.read_pth(path)
            abs_path = os.path.normpath(path)
            shown = self.t.display(path)
            extra.extend(Path(p) for p in info.path_entries)
            if info.problem is not None:
                self.add(ENV_UNREADABLE.finding(shown, f"cannot read .pth: {info.problem}",
                                                evidence=info.problem))
                continue
            owner = self._verified_owner(abs_path)
            if info.exec_lines:
                if info.benign or (info.nspkg and owner is not None):
                    continue
                first = info.exec_lines[0]
                by = f"shipped by {owner.label}" if owner else "not owned by any distribution"
                self.add(PTH_EXEC.finding(
                    shown, f"runs code at every interpreter start-up ({by}; "
                    f"{len(info.exec_lines)} import line(s))", evidence=first.text[:200],
                    line=first.number, severity=Severity.MEDIUM if owner else None),
                    shown, hash_file(abs_path).sha256, abs_path)
            elif abs_path not in self.recorded:
                added = ", ".join(info.path_entries[:3]) or "nothing that exists"
                self.add(FILE_ADDED.finding(
                    shown, f".pth file not listed in any RECORD; adds to sys.path: {added}",
                    evidence=path.name, severity=Severity.MEDIUM),
                    shown, hash_file(abs_path).sha256, abs_path)
        return extra

    def startup_modules(self, extra: list[Path]) -> None:
        search = [*self.t.base_path, *self.t.site_dirs, *extra]
        search += [Path(p) for p in self.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        unique = list(dict.fromkeys(search))
        for mod in hooks.find_startup_modules(unique):
            if mod.benign:
                continue
            abs_path = os.path.normpath(mod.path)
            shown = self.t.display(mod.path)
            owner = self._verified_owner(abs_path)
            severity: Severity | None = Severity.MEDIUM if owner else None
            note = f"shipped by {owner.label}" if owner else "not owned by any distribution"
            if mod.module == "usercustomize" and not self.t.user_site_enabled:
                severity, note = Severity.LOW, note + "; runs only when the user site is enabled"
            target = os.path.join(abs_path, "__init__.py") if os.path.isdir(abs_path) \
                else abs_path
            sha = None if mod.member else hash_file(target).sha256
            self.add(SITECUSTOMIZE.finding(
                shown, f"{mod.module} is imported automatically at start-up ({note})",
                evidence=mod.member or os.path.basename(abs_path), member=mod.member,
                severity=severity), shown, sha, abs_path)
            if target.endswith(".py"):
                self.res.hook_files.append(target)

    def bytecode(self, known: Mapping[str, tuple[str, str]]) -> None:
        """Compare in-use caches with their verified sources. `known` (from a lock): display
        path -> (cache sha256, source sha256) proven equal before; those pairs are not
        recompiled while both hashes still match."""
        from mlscan.envcheck_pyc import cache_pairs, compare_pairs

        pairs = cache_pairs(self.verified_py)
        pyc_sha = hash_many([(p, "sha256") for p, _ in pairs], self.workers)
        hashes = {p: (pyc_sha[p].sha256 or "", self.source_sha.get(s, "")) for p, s in pairs}
        todo = [(p, s) for p, s in pairs if known.get(self.t.display(p)) != hashes[p]]
        verdicts = compare_pairs(todo, self.workers)
        for pyc, _src in pairs:
            same, reason = verdicts.get(pyc, (True, None))
            shown = self.t.display(pyc)
            if same:
                self.res.bytecode_ok[shown] = hashes[pyc]
            if reason is None:
                continue
            self.add(BYTECODE_DIFFERS.finding(
                shown, f"{reason}; Python runs this cache instead of the verified source",
                evidence=os.path.basename(pyc),
                severity=Severity.CRITICAL if is_ml_path(shown) else None),
                shown, hashes[pyc][0], pyc)

    def env_vars(self) -> None:
        for name, value, severity, why in hooks.startup_env(self.environ):
            key = f"env:{name}"
            self.add(STARTUP_ENV.finding(key, f"{name} is set: {why}",
                                         evidence=f"{name}={value[:300]}", severity=severity),
                     key, _sha_text(value))
            if name == "PYTHONSTARTUP" and value.endswith(".py") and os.path.isfile(value):
                self.res.hook_files.append(os.path.abspath(value))


def verified_paths(target: TargetEnv) -> list[str]:
    """The files `check` hashes against RECORD (for benchmarks against other tools)."""
    return [job.abs_path for job in _Checker(target, {}, 0).collect()]


def check(target: TargetEnv, environ: Mapping[str, str] | None = None,
          workers: int = 0, bytecode: bool = False,
          known_bytecode: Mapping[str, tuple[str, str]] | None = None) -> EnvResult:
    """Run every integrity and start-up hook check on `target` (`bytecode`: also compare
    in-use `__pycache__` files with their verified sources; slow, compiles every source)."""
    start = time.perf_counter()
    checker = _Checker(target, os.environ if environ is None else environ, workers)
    hasher = ParallelHasher(workers)
    jobs = checker.collect(hasher)
    results = hasher.results()
    checker.res.hash_seconds = time.perf_counter() - start
    checker.verify(jobs, results)
    if bytecode:
        checker.bytecode(known_bytecode or {})
    checker.unlisted()
    checker.added_metadata()
    checker.startup_modules(checker.pth())
    checker.env_vars()
    checker.res.seconds = time.perf_counter() - start
    return checker.res
