"""SARIF 2.1.0 for GitHub code scanning (and any SARIF viewer).

GitHub specifics: `security-severity` and `precision` drive its severity and filtering;
`primaryLocationLineHash` is normally computed by the upload action from the file's text, which
means nothing for a binary model file, so mlscan sets it (from the finding's fingerprint) for
findings without a line. GitHub keeps at most 5,000 results per run: we keep the most severe
MAX_RESULTS and say how many were left out in the run's properties and notifications.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlscan import __version__, registry
from mlscan.model import Finding, Report, Rule, RuleDoc, Severity
from mlscan.ruledocs import DOCS_URL, anchor, render_rule, rule_markdown

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/mlscan/mlscan"
MAX_RESULTS = 5000
MAX_TEXT = 1000
"""Longest message/evidence we emit (a minified line can be megabytes)."""

LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning",
         Severity.LOW: "note"}
# GitHub maps security-severity >= 9.0 critical, >= 7.0 high, >= 4.0 medium, else low.
SECURITY_SEVERITY = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5",
                     Severity.LOW: "3.0"}


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def rule_descriptor(rule: Rule) -> dict[str, Any]:
    tags = list(dict.fromkeys(("security", *rule.tags)))
    if rule.cwe:
        tags.append(f"external/cwe/cwe-{rule.cwe}")
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.doc.what},
        "help": {"text": render_rule(rule), "markdown": rule_markdown(rule)},
        "helpUri": f"{DOCS_URL}#{anchor(rule)}",
        "defaultConfiguration": {"level": LEVEL[rule.severity]},
        "properties": {
            "tags": tags,
            "precision": rule.confidence.value,
            "security-severity": SECURITY_SEVERITY[rule.severity],
        },
    }


def _location(f: Finding, srcroot: Path) -> dict[str, Any]:
    if f.path.startswith("/"):  # outside the scan base: an absolute file URI
        artifact: dict[str, Any] = {"uri": Path(f.path).as_uri()}
    else:
        # File names need not be UTF-8: percent-encode their original bytes.
        artifact = {"uri": quote(f.path, safe="/", errors="surrogateescape"),
                    "uriBaseId": "%SRCROOT%"}
    region: dict[str, Any] = {"startLine": f.line if f.line and f.line > 0 else 1}
    if f.line and f.column and f.column > 0:
        region["startColumn"] = f.column
    return {"physicalLocation": {"artifactLocation": artifact, "region": region}}


def _result(f: Finding, index: dict[str, int], occurrences: Counter[str],
            srcroot: Path, why: str | None) -> dict[str, Any]:
    props: dict[str, Any] = {"severity": f.severity.value, "confidence": f.confidence.value}
    if f.evidence:
        props["evidence"] = _clip(f.evidence)
    if f.member:
        props["member"] = f.member
    if f.offset is not None:
        props["offset"] = f.offset
    fingerprints = {"mlscanFingerprint/v1": f.fingerprint}
    if f.line is None:
        # Binary artifact: GitHub would hash "line 1" of the binary; give it our identity.
        occurrences[f.fingerprint] += 1
        fingerprints["primaryLocationLineHash"] = (
            f"{f.fingerprint[:16]}:{occurrences[f.fingerprint]}")
    result: dict[str, Any] = {
        "ruleId": f.rule_id,
        "level": LEVEL[f.severity],
        "message": {"text": _clip(_message(f))},
        "locations": [_location(f, srcroot)],
        "partialFingerprints": fingerprints,
        "properties": props,
    }
    if f.rule_id in index:
        result["ruleIndex"] = index[f.rule_id]
    if why is not None:
        kind, _, detail = why.partition(": ")
        result["suppressions"] = [{
            "kind": "inSource" if kind == "inline" else "external",
            "status": "accepted",
            "justification": f"{kind}: {detail}" if detail else kind,
        }]
    return result


def _message(f: Finding) -> str:
    where = f" [in {f.member}]" if f.member and f.member not in f.message else ""
    return (f.message or f.rule) + where


def render(report: Report, srcroot: Path | None = None) -> str:
    srcroot = (srcroot or Path.cwd()).absolute()
    rules = list(registry.all_rules().values())
    known = {r.code for r in rules}
    # Findings of rules that are not registered (should not happen) still need a descriptor.
    for f in (*report.findings, *report.suppressed):
        if f.rule_id not in known:
            known.add(f.rule_id)
            rules.append(Rule(f.rule_id, f.rule, f.severity, f.confidence, f.rule,
                              RuleDoc(what=f.rule, why="")))
    index = {r.code: i for i, r in enumerate(rules)}
    items: list[tuple[Finding, str | None]] = [(f, None) for f in report.findings]
    whys = report.suppressions or ("external",) * len(report.suppressed)
    items += list(zip(report.suppressed, whys, strict=False))
    # Most severe first, so truncation drops the least important results.
    items.sort(key=lambda item: (item[1] is not None, -item[0].severity.rank,
                                 item[0].sort_key()))
    kept, dropped = items[:MAX_RESULTS], len(items) - min(len(items), MAX_RESULTS)
    occurrences: Counter[str] = Counter()
    results = [_result(f, index, occurrences, srcroot, why) for f, why in kept]
    notes = [{"level": "error", "message": {"text": _clip(f"{e.path}: {e.message}")}}
             for e in report.errors]
    if dropped:
        notes.append({"level": "warning", "message": {
            "text": f"{dropped} results omitted: SARIF output is capped at {MAX_RESULTS} "
                    "results (GitHub's limit); use --format json for all of them."}})
    invocation: dict[str, Any] = {"executionSuccessful": not report.errors}
    if notes:
        invocation["toolExecutionNotifications"] = notes
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "mlscan",
            "semanticVersion": __version__,
            "version": __version__,
            "informationUri": INFORMATION_URI,
            "rules": [rule_descriptor(r) for r in rules],
        }},
        "originalUriBaseIds": {"%SRCROOT%": {"uri": srcroot.as_uri().rstrip("/") + "/"}},
        "invocations": [invocation],
        "columnKind": "unicodeCodePoints",
        "results": results,
        "properties": {
            "files": report.summary.files,
            "bytes": report.summary.bytes,
            "seconds": report.summary.seconds,
            "suppressed": len(report.suppressed),
            "omittedResults": dropped,
        },
    }
    doc = {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
