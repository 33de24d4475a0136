"""MLS905-MLS906: suppression comments that are malformed or no longer needed."""

from __future__ import annotations

from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

BARE_IGNORE = register(
    Rule(
        code="MLS905",
        name="bare-ignore-comment",
        severity=Severity.LOW,
        confidence=Confidence.HIGH,
        summary="An `# mlscan: ignore` comment names no rule code (or a malformed one).",
        tags=("security", "maintainability"),
        doc=RuleDoc(
            what="Reports `# mlscan: ignore` comments without a bracketed list of rule codes, "
            "and comments whose codes are not of the form `MLS` + three digits. Such comments "
            "suppress nothing.",
            why="A blanket ignore hides every present and future finding on its line, including "
            "ones nobody reviewed. mlscan requires the exact rule being accepted, so a reviewer "
            "can see what was waived and a new problem on the same line is still reported.",
            example="data = pickle.loads(blob)  # mlscan: ignore",
            use_instead="data = pickle.loads(blob)  # mlscan: ignore[MLS103] blob is signed",
            references=("https://docs.astral.sh/ruff/rules/blanket-noqa/",),
        ),
    )
)

UNUSED_IGNORE = register(
    Rule(
        code="MLS906",
        name="unused-ignore-comment",
        severity=Severity.LOW,
        confidence=Confidence.HIGH,
        summary="An `# mlscan: ignore[...]` comment suppresses no finding.",
        tags=("security", "maintainability"),
        doc=RuleDoc(
            what="Reports rule codes in `# mlscan: ignore[...]` comments that matched no "
            "finding on their line (or on the next line, for a comment on a line of its own), "
            "and codes of rules mlscan does not know.",
            why="Stale suppressions accumulate and later hide a real finding that moves onto "
            "the same line. Removing them keeps every waiver meaningful.",
            example="x = json.loads(text)  # mlscan: ignore[MLS103]",
            use_instead="x = json.loads(text)",
            references=("https://docs.astral.sh/ruff/rules/unused-noqa/",),
        ),
    )
)
