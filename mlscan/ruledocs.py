"""Render rule documentation (terminal and docs/rules.md) from the registered rules."""

from __future__ import annotations

from collections.abc import Iterable

from mlscan.model import Rule


def render_list(rules: Iterable[Rule]) -> str:
    lines = [f"{r.code}  {r.severity.value:8}  {r.name:34} {r.summary}" for r in rules]
    return "\n".join(lines) + "\n"


def render_rule(rule: Rule) -> str:
    d = rule.doc
    out = [
        f"# {rule.code} {rule.name}",
        "",
        f"Severity: {rule.severity.value}   Confidence: {rule.confidence.value}"
        + (f"   CWE-{rule.cwe}" if rule.cwe else ""),
        "",
        rule.summary,
        "",
        "## What it does",
        d.what,
        "",
        "## Why it matters",
        d.why,
    ]
    if d.example:
        out += ["", "## Example", "```", d.example, "```"]
    if d.use_instead:
        out += ["", "## Use instead", d.use_instead]
    if d.references:
        out += ["", "## References", *[f"- {r}" for r in d.references]]
    return "\n".join(out) + "\n"
