"""Reporters: each a pure `render(report, ...) -> str`. Selected by `--format`."""

from __future__ import annotations

import enum
from collections.abc import Callable

from mlscan.model import Report


class Format(str, enum.Enum):
    TEXT = "text"
    JSON = "json"


def renderer(fmt: Format) -> Callable[[Report, bool], str]:
    """Return render(report, color)."""
    if fmt is Format.JSON:
        from mlscan.reporters import json_report

        return lambda report, _color: json_report.render(report)
    from mlscan.reporters import text

    return text.render
