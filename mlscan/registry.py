"""Every rule by code. Rule-providing modules register at import; `all_rules()` imports them all.

Add a module that defines rules to `PROVIDERS`; it must call `register()` at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from mlscan.model import Rule

PROVIDERS: tuple[str, ...] = (
    "mlscan.checks",
    "mlscan.envcheck_rules",
    "mlscan.rulesets.model_files",
    "mlscan.rulesets.meta",
    "mlscan.rulesets.suppressions",
    "mlscan.rulesets.hf_formats",
    "mlscan.rulesets.model_formats",
    "mlscan.rulesets.semgrep_rules",
)

_RULES: dict[str, Rule] = {}
_loaded = False


def register(rule: Rule) -> Rule:
    existing = _RULES.get(rule.code)
    if existing is not None and existing != rule:
        raise ValueError(f"rule code {rule.code} registered twice ({existing.name}, {rule.name})")
    _RULES[rule.code] = rule
    return rule


def all_rules() -> dict[str, Rule]:
    global _loaded
    if not _loaded:
        for module in PROVIDERS:
            importlib.import_module(module)
        _loaded = True
    return dict(sorted(_RULES.items()))


def get(code: str) -> Rule:
    rules = all_rules()
    try:
        return rules[code.upper()]
    except KeyError:
        raise KeyError(f"unknown rule {code!r}") from None


def matches(code: str, selectors: Iterable[str]) -> bool:
    """True when `code` is selected by any selector: a full code (`MLS201`), a prefix (`MLS2`)
    or a rule name (`pickle-dangerous-global`)."""
    code = code.upper()
    for selector in selectors:
        sel = selector.strip()
        if not sel:
            continue
        if code.startswith(sel.upper()):
            return True
        if sel.upper().startswith("MLS"):
            continue  # a code or prefix: no need to load every rule to compare names
        rule = all_rules().get(code)
        if rule is not None and rule.name == sel.lower():
            return True
    return False
