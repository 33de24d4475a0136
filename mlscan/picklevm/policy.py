"""Pickle policy loaded from `rules/pickle/*.yaml`: allowlist, denylist, tampering patterns.

Precedence (first match wins): exact denylisted callable -> exact allowlisted name ->
denylisted module tree -> tampering pattern -> dunder reach-through -> unknown.
Exact allowlist entries may carve a data constructor out of a denied tree (e.g.
`pathlib.PosixPath` inside `pathlib`); nothing is ever allowed by module.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from mlscan.picklevm.names import has_dunder, normalize
from mlscan.resources import rules_dir


class Verdict(str, enum.Enum):
    SAFE = "safe"
    DANGEROUS = "dangerous"
    TAMPER = "tamper"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Policy:
    allow: frozenset[str]
    deny_exact: frozenset[str]
    deny_modules: tuple[str, ...]
    tamper_exact: frozenset[str]
    tamper_patterns: tuple[str, ...]
    """fnmatch patterns; compiled on first use (most scans never meet an unknown name)."""

    @cached_property
    def _tamper_re(self) -> re.Pattern[str] | None:
        if not self.tamper_patterns:
            return None
        return re.compile("|".join(fnmatch.translate(p) for p in self.tamper_patterns))

    def classify(self, qualname: str) -> tuple[Verdict, str]:
        """(verdict, reason) for a fully qualified name as the loader would resolve it."""
        q = normalize(qualname)
        if self._denied_exact(q):
            return Verdict.DANGEROUS, "on the denylist"
        if q in self.allow:
            return Verdict.SAFE, "allowlisted data constructor"
        for mod in self.deny_modules:
            if q == mod or q.startswith(mod + "."):
                return Verdict.DANGEROUS, f"in the denied module tree '{mod}'"
        tamper_re = self._tamper_re
        if q in self.tamper_exact or (tamper_re is not None and tamper_re.match(q)):
            return Verdict.TAMPER, "changes loaded objects in place"
        if has_dunder(q):
            return Verdict.DANGEROUS, "reaches through a dunder attribute"
        return Verdict.UNKNOWN, "not on the allowlist"

    def _denied_exact(self, q: str) -> bool:
        if q in self.deny_exact:
            return True
        # anything reached through a denied callable (e.g. builtins.eval.__call__)
        head, _, _ = q.rpartition(".")
        while head:
            if head in self.deny_exact:
                return True
            head, _, _ = head.rpartition(".")
        return False

    def extended(self, extra_allow: tuple[str, ...]) -> Policy:
        if not extra_allow:
            return self
        return Policy(self.allow | {normalize(x) for x in extra_allow}, self.deny_exact,
                      self.deny_modules, self.tamper_exact, self.tamper_patterns)


def _load_yaml(path: Path) -> dict[str, Any]:
    """Policy files are `key:` sections of `- item` lines; read that subset directly (PyYAML
    costs ~30 ms of start-up on every scan) and defer to PyYAML for anything else."""
    text = path.read_text(encoding="utf-8")
    simple = _read_sections(text)
    if simple is not None:
        return simple
    import yaml

    SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster start-up
    with open(path, encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=SafeLoader) or {}  # a safe loader
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


_SECTION = re.compile(r"^([A-Za-z_][\w-]*):\s*(?:#.*)?$")
_ITEM = re.compile(r"^\s+- ([^\s#'\"][^\s#]*|\"[^\"]*\"|'[^']*')\s*(?:#.*)?$")


def _read_sections(text: str) -> dict[str, Any] | None:
    data: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        section = _SECTION.match(line)
        if section:
            current = data.setdefault(section.group(1), [])
            continue
        item = _ITEM.match(line)
        if item is None or current is None:
            return None  # not the simple shape: let PyYAML read it
        value = item.group(1)
        current.append(value[1:-1] if value[:1] in ("'", '"') else value)
    return data


def _names(data: dict[str, Any], key: str, path: Path) -> list[str]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{path}: '{key}' must be a list of strings")
    return value


@cache
def default_policy() -> Policy:
    base = rules_dir() / "pickle"
    allow_file, deny_file, tamper_file = (base / "allowlist.yaml", base / "denylist.yaml",
                                          base / "tampering.yaml")
    allow_data = _load_yaml(allow_file)
    allow: set[str] = set()
    for key, value in allow_data.items():
        if not isinstance(value, list):
            raise ValueError(f"{allow_file}: section '{key}' must be a list")
        allow.update(normalize(v) for v in _names(allow_data, key, allow_file))
    deny = _load_yaml(deny_file)
    tamper = _load_yaml(tamper_file)
    patterns = _names(tamper, "patterns", tamper_file)
    return Policy(
        allow=frozenset(allow),
        deny_exact=frozenset(normalize(x) for x in _names(deny, "callables", deny_file)),
        deny_modules=tuple(sorted(set(_names(deny, "modules", deny_file)), key=len)),
        tamper_exact=frozenset(_names(tamper, "exact", tamper_file)),
        tamper_patterns=tuple(patterns),
    )


def policy_for(extra_allow: tuple[str, ...]) -> Policy:
    return default_policy().extended(extra_allow)
