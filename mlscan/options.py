"""Command-line flags + config file -> ScanOptions. Flags win over the file; `ignore` and
`exclude` from both are combined (a flag can only narrow a scan further)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlscan import baseline as baseline_file
from mlscan.cache import default_dir
from mlscan.config import Config, ConfigError, find_config, load_config, rebase_pattern
from mlscan.context import Settings
from mlscan.engine import ScanOptions
from mlscan.model import Severity
from mlscan.suppress import SuppressOptions


class OptionsError(Exception):
    """Bad flag, config or baseline (exit code 2)."""


@dataclass(frozen=True)
class Flags:
    """What the user typed; None/empty means 'not given'."""

    paths: tuple[Path, ...]
    config: Path | None = None
    isolated: bool = False
    """Ignore config files found near the scan root (audits of repositories you do not trust)."""
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_severity: str | None = None
    fail_on: str | None = None
    baseline: Path | None = None
    inline_ignores: bool = True
    cache: bool = True
    jobs: int = 0


def _severity(text: str | None, configured: Severity | None, default: Severity,
              flag: str) -> Severity:
    if text is None:
        return configured or default
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise OptionsError(f"{flag}: {exc}") from None


def read_config(flags: Flags) -> Config:
    try:
        if flags.config is not None:
            if not flags.config.is_file():
                raise OptionsError(f"--config: no such file: {flags.config}")
            return load_config(flags.config)
        if flags.isolated or not flags.paths:
            return Config()
        found = find_config(flags.paths[0])
        return load_config(found) if found else Config()
    except ConfigError as exc:
        raise OptionsError(str(exc)) from None


def build(flags: Flags, *, with_baseline: bool = True) -> tuple[ScanOptions, Severity]:
    """ScanOptions and the --fail-on threshold."""
    cfg = read_config(flags)
    base = Path.cwd()
    root = cfg.root or base

    def rebase(patterns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(rebase_pattern(p, root, base) for p in patterns)

    baseline = None
    baseline_path = flags.baseline or cfg.baseline
    if with_baseline and baseline_path is not None:
        try:
            baseline = baseline_file.load(baseline_path, base)
        except baseline_file.BaselineError as exc:
            raise OptionsError(str(exc)) from None
    suppress = SuppressOptions(
        inline=flags.inline_ignores,
        per_file_ignores=tuple((rebase((glob,))[0], codes) for glob, codes
                               in cfg.per_file_ignores),
        allow_sha256=cfg.allow_sha256,
        baseline=baseline,
    )
    use_cache = flags.cache and cfg.cache and os.environ.get("MLSCAN_NO_CACHE", "") in ("", "0")
    opts = ScanOptions(
        paths=flags.paths,
        settings=Settings(limits=cfg.limits, extra_pickle_allowlist=cfg.extend_pickle_allowlist),
        exclude=rebase(cfg.exclude) + flags.exclude,
        select=flags.select or cfg.select,
        ignore=cfg.ignore + flags.ignore,
        min_severity=_severity(flags.min_severity, cfg.min_severity, Severity.LOW,
                               "--min-severity"),
        jobs=flags.jobs,
        base=base,
        suppress=suppress,
        cache_dir=default_dir() if use_cache else None,
    )
    fail_on = _severity(flags.fail_on, cfg.fail_on, Severity.HIGH, "--fail-on")
    return opts, fail_on


def foreign_config(flags: Flags) -> Path | None:
    """The config file in use when it comes from the scanned tree rather than from the working
    directory or its parents: a downloaded repository can ship one to switch checks off."""
    if flags.config is not None or flags.isolated or not flags.paths:
        return None
    found = find_config(flags.paths[0])
    if found is None:
        return None
    root, cwd = found.parent.absolute(), Path.cwd().absolute()
    return None if root == cwd or root in cwd.parents else found
