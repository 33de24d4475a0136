"""Locate the packaged `rules/` data (wheel: mlscan/_rules; source checkout: ./rules)."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def rules_dir() -> Path:
    here = Path(__file__).resolve().parent
    packaged = here / "_rules"
    if packaged.is_dir():
        return packaged
    checkout = here.parent / "rules"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("mlscan rule data not found (expected mlscan/_rules or ./rules)")
