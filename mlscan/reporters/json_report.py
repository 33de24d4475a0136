"""JSON reporter: the stable, versioned machine format of DESIGN.md."""

from __future__ import annotations

import json
from typing import Any

from mlscan import __version__
from mlscan.model import Finding, Report


def finding_dict(f: Finding) -> dict[str, Any]:
    return {
        "rule_id": f.rule_id,
        "rule": f.rule,
        "severity": f.severity.value,
        "confidence": f.confidence.value,
        "path": f.path,
        "member": f.member,
        "line": f.line,
        "column": f.column,
        "offset": f.offset,
        "message": f.message,
        "evidence": f.evidence,
        "fingerprint": f.fingerprint,
    }


def render(report: Report) -> str:
    doc = {
        "version": __version__,
        "findings": [finding_dict(f) for f in report.findings],
        "suppressed": [finding_dict(f) for f in report.suppressed],
        "errors": [{"path": e.path, "message": e.message} for e in report.errors],
        "summary": {
            "files": report.summary.files,
            "bytes": report.summary.bytes,
            "seconds": report.summary.seconds,
            "by_severity": report.by_severity(),
        },
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
