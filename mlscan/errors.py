"""Exceptions analyzers raise; the dispatcher turns each into a finding (never a crash)."""

from __future__ import annotations


class AnalysisStop(Exception):
    """Base: analysis of one artifact ended early. `offset` is where, when known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class MalformedError(AnalysisStop):
    """Content is truncated, corrupt or not the format it claims (-> MLS901)."""


class LimitExceeded(AnalysisStop):
    """A size/depth/time/decompression budget ran out (-> MLS902)."""
