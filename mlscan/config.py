"""Find and validate `[tool.mlscan]` (pyproject.toml) or `mlscan.toml`, walking up from the
scan root. Unknown keys and bad values are errors naming the key: a typo must never silently
turn a check off."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlscan.context import Limits, MiB
from mlscan.model import Severity

CONFIG_FILES = ("mlscan.toml", "pyproject.toml")


class ConfigError(Exception):
    """A configuration file or value is invalid (exit code 2)."""


@dataclass(frozen=True)
class Config:
    """Settings from a config file; every field has the value used when no file is found."""

    path: Path | None = None
    """The file these settings came from."""
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    min_severity: Severity | None = None
    fail_on: Severity | None = None
    exclude: tuple[str, ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(glob, codes) pairs; globs are relative to the config file's folder."""
    extend_pickle_allowlist: tuple[str, ...] = ()
    allow_sha256: frozenset[str] = frozenset()
    baseline: Path | None = None
    cache: bool = True
    limits: Limits = field(default_factory=Limits)

    @property
    def root(self) -> Path | None:
        return self.path.parent if self.path is not None else None


# Config key -> (Limits field, multiplier): sizes are given in MiB in the file.
_LIMIT_KEYS: dict[str, tuple[str, int]] = {
    "max-seconds-per-file": ("max_seconds_per_file", 1),
    "max-decompressed-mb": ("max_decompressed_bytes", MiB),
    "max-compression-ratio": ("max_compression_ratio", 1),
    "max-depth": ("max_depth", 1),
    "max-members": ("max_members", 1),
    "max-pickle-memo": ("max_pickle_memo", 1),
    "max-pickle-stack": ("max_pickle_stack", 1),
    "max-text-mb": ("max_text_bytes", MiB),
}
_KEYS = frozenset({
    "select", "ignore", "min-severity", "fail-on", "exclude", "per-file-ignores",
    "extend-pickle-allowlist", "allow-sha256", "baseline", "cache", "limits",
})


def find_config(start: Path) -> Path | None:
    """The nearest mlscan.toml, or pyproject.toml with a [tool.mlscan] table, at or above
    `start` (a folder, or a file whose folder is used)."""
    here = start.absolute()
    if not here.is_dir():
        here = here.parent
    for folder in (here, *here.parents):
        for name in CONFIG_FILES:
            candidate = folder / name
            if candidate.is_file() and (name == "mlscan.toml" or _has_table(candidate)):
                return candidate
    return None


def _has_table(pyproject: Path) -> bool:
    try:
        data = pyproject.read_bytes()
    except OSError:
        return False
    if b"tool.mlscan" not in data:  # cheap: skip parsing unrelated pyproject files
        return False
    return "mlscan" in _read_toml(pyproject).get("tool", {})


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load_config(path: Path) -> Config:
    """Parse one config file: pyproject.toml reads [tool.mlscan], any other file the top level."""
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("mlscan", {})
        prefix = "tool.mlscan."
    else:
        table, prefix = data, ""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{prefix.rstrip('.')}] must be a table")
    return parse_table(table, path.absolute(), prefix)


def parse_table(table: Mapping[str, Any], path: Path, prefix: str = "") -> Config:
    def err(key: str, why: str) -> ConfigError:
        return ConfigError(f"{path}: {prefix}{key}: {why}")

    unknown = sorted(set(table) - _KEYS)
    if unknown:
        choices = ", ".join(sorted(_KEYS))
        raise err(unknown[0], f"unknown key (known keys: {choices})")
    values: dict[str, Any] = {"path": path}
    for key in ("select", "ignore", "exclude", "extend-pickle-allowlist"):
        if key in table:
            values[key.replace("-", "_")] = _strings(table[key], lambda why, k=key: err(k, why))
    for key in ("min-severity", "fail-on"):
        if key in table:
            try:
                values[key.replace("-", "_")] = Severity.parse(_string(table[key]))
            except (TypeError, ValueError) as exc:
                raise err(key, str(exc)) from None
    if "allow-sha256" in table:
        hashes = _strings(table["allow-sha256"], lambda why: err("allow-sha256", why))
        bad = [h for h in hashes if len(h) != 64 or any(c not in "0123456789abcdef"
                                                       for c in h.lower())]
        if bad:
            raise err("allow-sha256", f"not a sha256 hex digest: {bad[0]!r}")
        values["allow_sha256"] = frozenset(h.lower() for h in hashes)
    if "per-file-ignores" in table:
        values["per_file_ignores"] = _per_file(table["per-file-ignores"], err)
    if "baseline" in table:
        try:
            values["baseline"] = path.parent / _string(table["baseline"])
        except TypeError as exc:
            raise err("baseline", str(exc)) from None
    if "cache" in table:
        if not isinstance(table["cache"], bool):
            raise err("cache", "must be true or false")
        values["cache"] = table["cache"]
    if "limits" in table:
        values["limits"] = _limits(table["limits"], err)
    return Config(**values)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be a string, not {type(value).__name__}")
    return value


def _strings(value: object, err: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise err("must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def _per_file(value: object, err: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        raise err("per-file-ignores", 'must be a table of "glob" = ["MLS301", ...]')
    out = []
    for glob, codes in value.items():
        out.append((glob, _strings(codes, lambda why, g=glob: err(f"per-file-ignores.{g}", why))))
    return tuple(out)


def _limits(value: object, err: Any) -> Limits:
    if not isinstance(value, dict):
        raise err("limits", "must be a table")
    changes: dict[str, Any] = {}
    for key, raw in value.items():
        if key not in _LIMIT_KEYS:
            raise err(f"limits.{key}", f"unknown key (known keys: {', '.join(_LIMIT_KEYS)})")
        name, scale = _LIMIT_KEYS[key]
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
            raise err(f"limits.{key}", "must be a positive number")
        is_float = name == "max_seconds_per_file"
        changes[name] = float(raw) if is_float else int(raw * scale)
    return dataclasses.replace(Limits(), **changes)


def rebase_pattern(pattern: str, root: Path, base: Path) -> str:
    """Turn a glob relative to the config folder `root` into one relative to `base` (the folder
    display paths are relative to). Globs without '/' match any path component: unchanged."""
    if "/" not in pattern.rstrip("/"):
        return pattern
    full = os.path.normpath(os.path.join(root.absolute(), pattern.lstrip("/")))
    rel = os.path.relpath(full, base.absolute())
    if rel.startswith(".."):
        return Path(full).as_posix()
    return Path(rel).as_posix()
