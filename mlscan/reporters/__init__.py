"""Reporters: each a pure `render(report, ...) -> str`. Selected by `--format`."""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path

from mlscan.model import Report


class Format(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    SARIF = "sarif"
    MARKDOWN = "markdown"


def renderer(fmt: Format) -> Callable[[Report, bool], str]:
    """Return render(report, color)."""
    if fmt is Format.JSON:
        from mlscan.reporters import json_report

        return lambda report, _color: json_report.render(report)
    if fmt is Format.SARIF:
        from mlscan.reporters import sarif

        # Display paths are relative to the working directory: that is %SRCROOT%.
        return lambda report, _color: sarif.render(report, srcroot=Path.cwd())
    if fmt is Format.MARKDOWN:
        from mlscan.reporters import markdown

        return lambda report, _color: markdown.render(report)
    from mlscan.reporters import text

    return text.render
