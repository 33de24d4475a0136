"""Run our packaged semgrep rules (MLS4xx) over every Python file and notebook of a scan.

Engine choice, measured here (14 rules, the 3 annotated example files, 2 shared cores):
`semgrep scan` costs 3.4-4.0 s of CPU (4.4-7.7 s wall: the Python wrapper imports, validates
rules and plans targets), the bundled `semgrep-core` binary 0.6 s for the same 70 results.
We call `semgrep-core` with an explicit target list and fall back to `semgrep scan` only when
the core binary is missing or rejects our input (its target-file format is internal and may
change between semgrep releases).

Both paths scan exactly the files we pass: no .gitignore, no .semgrepignore, no default
`tests/` exclusion, no size cap, and `# nosemgrep` comments are ignored (the code under audit
could have written them; mlscan's own suppressions name a rule code). No network: the version
check and metrics are off. Files are first filtered and grouped by each rule's literal
prefilter (see semgrep_plan), so a rule only runs where it can match: on timm, accelerate and
lightning (233k lines) this takes semgrep from ~90 to ~9-14 CPU-seconds (bandit: ~20-27).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from mlscan.analyzers.base import Target, register_batch
from mlscan.analyzers.semgrep_notebooks import NotebookCode
from mlscan.context import Budget
from mlscan.kinds import Kind
from mlscan.model import Finding
from mlscan.rulesets.meta import ANALYZER_ERROR, LIMIT_EXCEEDED

_ENV_OVERRIDES = {
    "SEMGREP_ENABLE_VERSION_CHECK": "0",
    "SEMGREP_SEND_METRICS": "off",
    "SEMGREP_USER_AGENT_APPEND": "mlscan",
}
_CHUNK = 2000
"""Targets per `semgrep scan` call (command-line length); semgrep-core reads a file instead."""


class SemgrepUnavailable(RuntimeError):
    """Neither semgrep-core nor the semgrep CLI could run our rules."""


@dataclass
class RunResult:
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    engine: str = ""


@cache
def core_binary() -> str | None:
    """The semgrep-core binary bundled with the semgrep wheel (found without importing it)."""
    from importlib.util import find_spec

    spec = find_spec("semgrep")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "bin" / "semgrep-core"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("semgrep-core")


@cache
def cli_binary() -> str | None:
    beside = Path(sys.executable).with_name("semgrep")
    return str(beside) if beside.is_file() else shutil.which("semgrep")


def _env() -> dict[str, str]:
    return {**os.environ, **_ENV_OVERRIDES}


def _parse_json(stdout: str) -> dict[str, Any]:
    # semgrep-core prints one progress dot per target before the JSON document.
    start = stdout.find('{"')
    if start < 0:
        raise ValueError("no JSON in semgrep output")
    data = json.loads(stdout[start:])
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValueError("unexpected semgrep JSON shape")
    return data


def _fatal(errors: list[dict[str, Any]]) -> str | None:
    for err in errors:
        if not _error_path(err) and str(err.get("level", err.get("severity", ""))) == "error":
            return str(err.get("message", err))[:300]
    return None


def _error_path(err: dict[str, Any]) -> str | None:
    path = err.get("path")
    if path is None and isinstance(err.get("location"), dict):
        path = err["location"].get("path")
    return str(path) if path else None


def _run_core(binary: str, rules: Path, files: Sequence[Path], tmp: Path,
              per_file: float, timeout: float) -> RunResult:
    targets = [["CodeTarget", {"path": {"fpath": str(f), "ppath": str(f)},
                               "analyzer": "python", "products": ["sast"]}] for f in files]
    target_file = tmp / "targets.json"
    target_file.write_text(json.dumps(["Targets", targets]), encoding="utf-8")
    cmd = [binary, "-json", "-rules", str(rules), "-targets", str(target_file),
           "-timeout", f"{per_file:g}", "-timeout_threshold", "3", "-max_memory", "4000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL)
    data = _parse_json(proc.stdout)
    errors = list(data.get("errors") or [])
    fatal = _fatal(errors)
    if proc.returncode != 0 or fatal:
        raise ValueError(f"semgrep-core exited {proc.returncode}: {fatal or proc.stderr[-300:]}")
    return RunResult(list(data["results"]), errors, "semgrep-core")


def _run_cli(binary: str, rules: Path, files: Sequence[Path], per_file: float,
             timeout: float) -> RunResult:
    out = RunResult(engine="semgrep")
    for i in range(0, len(files), _CHUNK):
        cmd = [binary, "scan", "--config", str(rules), "--json", "--quiet", "--metrics=off",
               "--disable-version-check", "--disable-nosem", "--no-git-ignore",
               "--x-ignore-semgrepignore-files", "--scan-unknown-extensions",
               "--max-target-bytes=0", f"--timeout={per_file:g}", "--oss-only",
               "--", *(str(f) for f in files[i:i + _CHUNK])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
        try:
            data = _parse_json(proc.stdout)
        except ValueError as exc:
            raise ValueError(f"semgrep exited {proc.returncode}: {proc.stderr[-300:]}") from exc
        out.results.extend(data["results"])
        out.errors.extend(data.get("errors") or [])
    return out


def run_rules(files: Sequence[Path], *, rule_ids: Collection[str] | None = None,
              per_file: float = 10.0, timeout: float | None = None,
              engine: str = "auto") -> RunResult:
    """Run the packaged rules (all, or `rule_ids`) over `files` (absolute paths) in one
    semgrep process.

    `engine` is "auto" (core, then CLI), "core" or "cli". Raises SemgrepUnavailable when
    nothing could run, subprocess.TimeoutExpired when the whole run took too long.
    """
    from mlscan.rulesets.semgrep_rules import rules_json

    if timeout is None:
        timeout = 120.0 + 2.0 * len(files)
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mlscan-semgrep-") as tmpdir:
        tmp = Path(tmpdir)
        rules = tmp / "rules.json"
        rules.write_text(rules_json(rule_ids), encoding="utf-8")
        core = core_binary() if engine in ("auto", "core") else None
        if core:
            try:
                return _run_core(core, rules, files, tmp, per_file, timeout)
            except (OSError, ValueError) as exc:
                problems.append(f"semgrep-core: {exc}")
        elif engine != "cli":
            problems.append("semgrep-core not found")
        cli = cli_binary() if engine in ("auto", "cli") else None
        if cli:
            try:
                return _run_cli(cli, rules, files, per_file, timeout)
            except (OSError, ValueError) as exc:
                problems.append(f"semgrep: {exc}")
        elif engine != "core":
            problems.append("semgrep CLI not found")
    raise SemgrepUnavailable("; ".join(problems))


def _line_text(fs_path: Path, line: int, cache: dict[Path, list[str]]) -> str:
    lines = cache.get(fs_path)
    if lines is None:
        try:
            lines = fs_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        cache[fs_path] = lines
    text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    return text[:200]


def to_findings(run: RunResult, targets: Sequence[Target]) -> Iterator[Finding]:
    """Map semgrep results to findings by the mlscan code in each rule's metadata."""
    from mlscan.rulesets.semgrep_rules import CODE_KEY, rules_by_code

    rules = rules_by_code()
    by_path = {str(t.fs_path): t for t in targets}
    seen: set[tuple[str, str, int]] = set()
    lines: dict[Path, list[str]] = {}
    for res in run.results:
        target = by_path.get(str(res.get("path")))
        extra = res.get("extra") or {}
        rule = rules.get(str((extra.get("metadata") or {}).get(CODE_KEY, "")))
        if target is None or rule is None:
            continue
        line = int((res.get("start") or {}).get("line") or 0)
        key = (rule.code, target.path, line)
        if key in seen:
            continue  # one finding per rule and line, even when several patterns match
        seen.add(key)
        yield rule.finding(target.path, str(extra.get("message") or rule.summary).strip(),
                           evidence=_line_text(target.fs_path, line, lines), line=line or None,
                           column=(res.get("start") or {}).get("col"))
    yield from _error_findings(run, by_path)


def _error_findings(run: RunResult, by_path: dict[str, Target]) -> Iterator[Finding]:
    """One finding per file and error kind (semgrep reports one error per rule)."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for err in run.errors:
        path = _error_path(err) or ""
        if path in by_path:
            kind = err.get("type", err.get("error_type", "error"))
            kind = str(kind[0] if isinstance(kind, list) and kind else kind)
            grouped.setdefault((path, kind), []).append(err)
    for (path, kind), errs in grouped.items():
        rules = sorted({str(e.get("rule_id")) for e in errs if e.get("rule_id")})
        detail = next((str(e.get("message")).strip().splitlines()[0][:200]
                       for e in errs if str(e.get("message") or "").strip()), "")
        text = f"semgrep pattern rules (MLS4xx) did not fully check this file: {kind}"
        text += f" ({', '.join(rules)})" if rules else ""
        text += f": {detail}" if detail else ""
        limit = "timeout" in kind.lower() or "memory" in kind.lower()
        rule = LIMIT_EXCEEDED if limit else ANALYZER_ERROR
        yield rule.finding(by_path[path].path, text, evidence=f"semgrep {kind}")


def _notebooks_as_python(targets: list[Target], tmp: Path, limit: int
                         ) -> tuple[list[Target], dict[str, NotebookCode]]:
    """Python targets as they are; each readable notebook as a .py file of its code cells."""
    from mlscan.analyzers.semgrep_notebooks import notebook_code

    out: list[Target] = []
    notebooks: dict[str, NotebookCode] = {}
    for i, target in enumerate(targets):
        if target.kind is not Kind.NOTEBOOK:
            out.append(target)
            continue
        try:
            code = None if target.fs_path.stat().st_size > limit else \
                notebook_code(target.fs_path.read_bytes())
        except OSError:
            code = None  # the per-file analyzers report unreadable and oversized files
        if code is not None:
            py = tmp / f"notebook_{i}.py"
            py.write_text(code.text, encoding="utf-8")
            out.append(Target(py, target.path, Kind.PYTHON))
            notebooks[target.path] = code
    return out, notebooks


@register_batch(Kind.PYTHON, Kind.NOTEBOOK)
def analyze_python_batch(targets: list[Target], budget: Budget) -> Iterator[Finding]:
    from mlscan.analyzers.semgrep_plan import plan_runs

    # absolute paths: semgrep reports them back as given, and we map on them
    absolute = [replace(t, fs_path=t.fs_path.absolute()) for t in targets]
    limit = budget.limits.max_text_bytes
    per_file = budget.limits.max_seconds_per_file
    with tempfile.TemporaryDirectory(prefix="mlscan-notebooks-") as tmpdir:
        python, notebooks = _notebooks_as_python(absolute, Path(tmpdir).absolute(), limit)
        for run in plan_runs(python, limit):
            files = list(run.targets)
            try:
                result = run_rules([t.fs_path for t in files], rule_ids=run.rule_ids,
                                   per_file=per_file)
            except subprocess.TimeoutExpired as exc:
                yield LIMIT_EXCEEDED.finding(
                    files[0].path, f"semgrep did not finish within {exc.timeout:g}s; MLS4xx "
                    f"pattern rules were not applied to {len(files)} file(s)",
                    evidence="semgrep timeout")
                continue
            except SemgrepUnavailable as exc:
                yield ANALYZER_ERROR.finding(
                    files[0].path, f"semgrep could not run, so MLS4xx pattern rules were not "
                    f"applied to {len(files)} file(s): {exc}", evidence="semgrep unavailable")
                return  # the next runs would fail the same way
            for finding in to_findings(result, files):
                code = notebooks.get(finding.path)
                yield code.remap(finding) if code is not None else finding
