"""Decide which semgrep rules run on which Python files, before starting semgrep.

Semgrep's cost is dominated by taint rules matched on large files (measured on 361k lines
of PyTorch on a busy 2-core machine: 558 s wall for all 14 rules on all files). Each rule's
literal prefilter says which files it could possibly fire on; files no rule wants are
skipped, and files are grouped by the set of rules they need, so a rule only runs where it
can match. Groups are merged (cheapest first) while that is cheaper than starting one more
semgrep process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlscan.analyzers.base import Target

MAX_RUNS = 10
"""semgrep-core processes per scan at most."""
MERGE_BELOW = 50_000
"""Groups are merged while that adds less than this many rule-bytes of matching: measured,
one semgrep-core start (~0.15 s CPU) costs about as much as one taint rule on 50 KB."""


@dataclass(frozen=True)
class PlannedRun:
    rule_ids: frozenset[str]
    targets: tuple[Target, ...]
    size: int
    """Total bytes of the targets (the cost estimate used for merging)."""


def _rules_for(path: Path, limit: int) -> frozenset[str]:
    """Rules that may fire on this file; none for unreadable files and files over the text
    limit (the per-file Python analyzer reports those)."""
    from mlscan.rulesets.semgrep_rules import matching_rules

    try:
        if path.stat().st_size > limit:
            return frozenset()
        return matching_rules(path.read_bytes())
    except OSError:
        return frozenset()


def plan_runs(targets: Sequence[Target], limit: int, max_runs: int = MAX_RUNS
              ) -> list[PlannedRun]:
    groups: dict[frozenset[str], list[Target]] = {}
    sizes: dict[frozenset[str], int] = {}
    for target in targets:
        rules = _rules_for(target.fs_path, limit)
        if rules:
            groups.setdefault(rules, []).append(target)
            sizes[rules] = sizes.get(rules, 0) + _size(target.fs_path)
    runs = [PlannedRun(k, tuple(v), sizes[k]) for k, v in groups.items()]
    while len(runs) > 1:
        cost, i, j = _cheapest_pair(runs)
        if len(runs) <= max(1, max_runs) and cost >= MERGE_BELOW:
            break
        runs = _merge(runs, i, j)
    return sorted(runs, key=lambda r: -r.size)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _extra_cost(a: PlannedRun, b: PlannedRun) -> int:
    """Rule-bytes of work that merging adds: b's extra rules over a's files and vice versa."""
    return len(b.rule_ids - a.rule_ids) * a.size + len(a.rule_ids - b.rule_ids) * b.size


def _cheapest_pair(runs: list[PlannedRun]) -> tuple[int, int, int]:
    """(extra cost, i, j) of the cheapest merge; needs at least two runs."""
    return min((_extra_cost(runs[i], runs[j]), i, j)
               for i in range(len(runs)) for j in range(i + 1, len(runs)))


def _merge(runs: list[PlannedRun], i: int, j: int) -> list[PlannedRun]:
    a, b = runs[i], runs[j]
    merged = PlannedRun(a.rule_ids | b.rule_ids, a.targets + b.targets, a.size + b.size)
    return [r for k, r in enumerate(runs) if k not in (i, j)] + [merged]
