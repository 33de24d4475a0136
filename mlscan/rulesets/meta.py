"""MLS9xx: problems with the scan itself. A file we cannot read is a finding, never a pass."""

from __future__ import annotations

from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

MALFORMED = register(
    Rule(
        code="MLS901",
        name="malformed-artifact",
        severity=Severity.MEDIUM,
        confidence=Confidence.HIGH,
        summary="A model file or archive could not be parsed completely.",
        doc=RuleDoc(
            what="Reports truncated or corrupt pickles, archives, headers and files in an "
            "unknown or invalid format. Findings seen before the break are reported too.",
            why="Loaders often execute a pickle up to the point where it breaks ('nullifAI' "
            "payloads sit before a deliberate break). A scanner that gives up reports clean; "
            "mlscan reports what it saw and where it stopped.",
            example="A pickle that ends without STOP after a REDUCE.",
            use_instead="Re-download or re-export the artifact; do not load it until it parses.",
        ),
    )
)

LIMIT_EXCEEDED = register(
    Rule(
        code="MLS902",
        name="scan-limit-exceeded",
        severity=Severity.HIGH,
        confidence=Confidence.MEDIUM,
        summary="A size, depth, time or decompression limit stopped the analysis early.",
        doc=RuleDoc(
            what="Reports compression and zip bombs, nesting deeper than the limit, memo or "
            "stack floods and files that took longer than the per-file time budget.",
            why="What was not read cannot be called safe. Hostile files are built to exhaust "
            "scanners; mlscan stops in bounded time and memory and says so.",
            example="A 40 KB gzip that expands past the decompression limit.",
            use_instead="Raise the limit in [tool.mlscan] if the file is trusted and large.",
        ),
    )
)

ANALYZER_ERROR = register(
    Rule(
        code="MLS903",
        name="analyzer-error",
        severity=Severity.MEDIUM,
        confidence=Confidence.LOW,
        summary="An analyzer failed on this file; it was not fully checked.",
        doc=RuleDoc(
            what="Reports an unexpected failure inside mlscan while analyzing one file.",
            why="A crash must not turn into a clean result.",
            example="(internal error message)",
            use_instead="Report the bug with the file's format; keep the file quarantined.",
        ),
    )
)

NOT_SCANNED = register(
    Rule(
        code="MLS904",
        name="path-not-scanned",
        severity=Severity.MEDIUM,
        confidence=Confidence.HIGH,
        summary="A path was skipped: symlink out of the scan root, loop, FIFO or unreadable.",
        doc=RuleDoc(
            what="Reports paths mlscan deliberately did not open: symlinks pointing outside "
            "the scan root or in a loop, devices and FIFOs, files it has no permission to read.",
            why="Following links out of the root lets a repository make the scanner read (or "
            "hang on) arbitrary files; silently skipping them would hide content from the "
            "report.",
            example="model.bin -> /etc/passwd",
            use_instead="Scan the link target directly if you trust it.",
        ),
    )
)
