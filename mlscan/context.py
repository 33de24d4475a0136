"""Per-scan settings analyzers may read: limits and policy extensions (never config files)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mlscan.errors import LimitExceeded

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_seconds_per_file: float = 8.0
    """Leaves room for start-up inside the 10 s any one hostile file may cost."""
    max_decompressed_bytes: int = 2048 * MiB
    """Total bytes any one file may expand to through gzip/bz2/xz/zip/7z layers."""
    max_compression_ratio: int = 1000
    """Beyond this ratio *and* 256 MiB of output, a stream is treated as a bomb."""
    max_depth: int = 6
    """Nesting of archives and embedded payloads."""
    max_members: int = 100_000
    max_pickle_memo: int = 2_500_000
    """~250 MB of memo at worst; a 1M-token vocabulary needs about 1M entries."""
    max_pickle_stack: int = 1_000_000
    max_text_bytes: int = 32 * MiB
    """Code, notebooks and config files larger than this are reported, not parsed."""


@dataclass(frozen=True)
class Settings:
    """What analyzers may know about the scan. Picklable: sent to worker processes."""

    limits: Limits = field(default_factory=Limits)
    extra_pickle_allowlist: tuple[str, ...] = ()


class Budget:
    """Per-file time and decompression budget shared by every layer of one artifact."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.deadline = time.monotonic() + self.limits.max_seconds_per_file
        self.decompressed = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded(
                f"time budget of {self.limits.max_seconds_per_file:g}s per file exhausted"
            )

    def add_decompressed(self, n: int) -> None:
        self.decompressed += n
        if self.decompressed > self.limits.max_decompressed_bytes:
            raise LimitExceeded(
                "decompressed size exceeds "
                f"{self.limits.max_decompressed_bytes // MiB} MiB (possible compression bomb)"
            )
