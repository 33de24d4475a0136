"""MLS4xx: rules that live as semgrep YAML in `rules/semgrep/`. One mlscan Rule per semgrep rule.

The YAML is the single source: each rule's `metadata` carries its mlscan code, severity,
confidence, CWE and the documentation sections, and this module registers them at import.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register
from mlscan.resources import rules_dir

CODE_KEY = "mlscan-code"


class RuleSpecError(ValueError):
    """A semgrep rule file is missing required mlscan metadata (a packaging bug)."""


def semgrep_rules_dir() -> Path:
    return rules_dir() / "semgrep"


def rule_files() -> list[Path]:
    return sorted(semgrep_rules_dir().glob("*.yaml"))


@cache
def raw_rules() -> tuple[dict[str, Any], ...]:
    """Every semgrep rule of every packaged YAML file, as parsed dictionaries."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out: list[dict[str, Any]] = []
    for path in rule_files():
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # a safe loader
        rules = data.get("rules") if isinstance(data, dict) else None
        if not isinstance(rules, list):
            raise RuleSpecError(f"{path.name}: expected a top-level 'rules' list")
        for rule in rules:
            if not isinstance(rule, dict) or not isinstance(rule.get("metadata"), dict):
                raise RuleSpecError(f"{path.name}: every rule needs a metadata mapping")
            out.append(rule)
    return tuple(out)


def rules_json() -> str:
    """All rules as one JSON document, the form semgrep-core reads (YAML anchors resolved)."""
    return json.dumps({"rules": list(raw_rules())}, separators=(",", ":"))


def _text(meta: dict[str, Any], key: str, rule_id: str, required: bool = True) -> str:
    value = meta.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise RuleSpecError(f"semgrep rule {rule_id}: metadata.{key} must be a non-empty string")
    return " ".join(value.split()) if key != "example" else value.strip("\n")


def _cwe(meta: dict[str, Any]) -> int | None:
    value = meta.get("cwe")
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0] if value else None
    # semgrep convention: "CWE-95: Improper Neutralization ..."; we keep the number.
    text = str(value).upper().removeprefix("CWE-").split(":")[0].strip()
    return int(text) if text.isdigit() else None


def rule_from_spec(spec: dict[str, Any]) -> Rule:
    meta: dict[str, Any] = spec["metadata"]
    rule_id = str(spec.get("id", "?"))
    code = str(meta.get(CODE_KEY, ""))
    if not (len(code) == 6 and code.startswith("MLS4") and code[3:].isdigit()):
        raise RuleSpecError(f"semgrep rule {rule_id}: metadata.{CODE_KEY} must be MLS4xx")
    refs = meta.get("references", [])
    return Rule(
        code=code,
        name=rule_id,
        severity=Severity.parse(str(meta.get("mlscan-severity", ""))),
        confidence=Confidence(str(meta.get("confidence", "")).lower()),
        summary=_text(meta, "summary", rule_id),
        cwe=_cwe(meta),
        tags=("security", "code"),
        doc=RuleDoc(
            what=_text(meta, "what", rule_id),
            why=_text(meta, "why", rule_id),
            example=_text(meta, "example", rule_id, required=False),
            use_instead=_text(meta, "use-instead", rule_id, required=False),
            references=tuple(str(r) for r in refs) if isinstance(refs, list) else (),
        ),
    )


@cache
def rules_by_code() -> dict[str, Rule]:
    return {rule.code: rule for rule in (rule_from_spec(s) for s in raw_rules())}


for _rule in rules_by_code().values():
    register(_rule)
