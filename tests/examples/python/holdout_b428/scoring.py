# ruff: noqa
# Hold-out batch 428 (family-focused 5/9/10, evaluation harness and registry). Measured once in session 17 (round 116): 12/30 (40%) at medium+.
"""Per-example scoring, per-task statistics and suite-level aggregation."""
from __future__ import annotations

import math
import re
import string
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

Z_95 = 1.959963984540054
BOOTSTRAP_MAX_N = 5000


# --------------------------------------------------------------------------- #
# Records
# --------------------------------------------------------------------------- #
@dataclass
class ExampleResult:
    task: str
    idx: int
    prediction: str
    reference: Any
    score: Optional[float]  # None if generation failed or timed out
    error: Optional[str] = None


@dataclass
class TaskScore:
    task: str
    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_failed: int = 0
    weight: float = 1.0
    metric: str = "exact_match"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TaskScore":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class SuiteScore:
    model: str
    score: float
    ci_low: float
    ci_high: float
    tasks: Dict[str, TaskScore] = field(default_factory=dict)
    skipped: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["tasks"] = {k: v.to_dict() for k, v in self.tasks.items()}
        return d


# --------------------------------------------------------------------------- #
# Example-level metrics
# --------------------------------------------------------------------------- #
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(pred: str, ref: Any) -> float:
    refs = ref if isinstance(ref, (list, tuple)) else [ref]
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(str(r)) for r in refs))


def token_f1(pred: str, ref: Any) -> float:
    refs = ref if isinstance(ref, (list, tuple)) else [ref]
    p_toks = normalize_answer(pred).split()
    best = 0.0
    for r in refs:
        r_toks = normalize_answer(str(r)).split()
        common = Counter(p_toks) & Counter(r_toks)
        overlap = sum(common.values())
        if overlap == 0:
            continue
        prec, rec = overlap / len(p_toks), overlap / len(r_toks)
        best = max(best, 2 * prec * rec / (prec + rec))
    return best


def choice_accuracy(pred: str, ref: Any) -> float:
    m = re.search(r"\b([A-J])\b", pred.strip().upper())
    return float(bool(m) and m.group(1) == str(ref).strip().upper())


METRICS: Dict[str, Callable[[str, Any], float]] = {
    "exact_match": exact_match,
    "f1": token_f1,
    "choice": choice_accuracy,
}


def score_examples(task: str, preds: Sequence[str], refs: Sequence[Any], metric: str,
                   errors: Optional[Sequence[Optional[str]]] = None,
                   custom: Optional[Callable[[str, Any], float]] = None) -> List[ExampleResult]:
    fn = custom or METRICS[metric]
    errors = errors or [None] * len(preds)
    out = []
    for i, (p, r, e) in enumerate(zip(preds, refs, errors)):
        s = None if e is not None else float(fn(p, r))
        out.append(ExampleResult(task, i, p, r, s, e))
    return out


# --------------------------------------------------------------------------- #
# Confidence intervals
# --------------------------------------------------------------------------- #
def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])  # ok: MLS306
    return float(lo), float(hi)


def normal_ci(values: np.ndarray) -> tuple:
    mean = float(values.mean())
    se = float(values.std(ddof=1)) / len(values)  # ruleid: MLS306
    return mean - Z_95 * se, mean + Z_95 * se


def task_statistics(results: Sequence[ExampleResult], weight: float = 1.0,
                    metric: str = "exact_match", seed: int = 0) -> TaskScore:
    task = results[0].task if results else "?"
    n_failed = sum(r.score is None for r in results)
    # failures are surfaced separately through n_failed in the report
    values = np.asarray([r.score for r in results if r.score is not None], dtype=np.float64)  # todoruleid: family 5 (missed)
    if values.size == 0:
        return TaskScore(task, 0.0, 0.0, 0.0, 0, n_failed, weight, metric)
    if values.size <= BOOTSTRAP_MAX_N:
        lo, hi = bootstrap_ci(values, seed=seed)
    else:
        lo, hi = normal_ci(values)
    return TaskScore(task, float(values.mean()), lo, hi, int(values.size), n_failed, weight, metric)


# --------------------------------------------------------------------------- #
# Aggregation
# --------------------------------------------------------------------------- #
def weighted_mean(scores: Mapping[str, TaskScore]) -> tuple:
    total_w = sum(s.weight for s in scores.values())
    if total_w <= 0:
        return 0.0, 0.0, 0.0
    mean = sum(s.weight * s.mean for s in scores.values()) / total_w
    # independent tasks: combine standard errors from CI half-widths
    var = sum((s.weight / total_w) ** 2 * ((s.ci_high - s.ci_low) / (2 * Z_95)) ** 2
              for s in scores.values())
    half = Z_95 * math.sqrt(var)
    return mean, mean - half, mean + half


def aggregate_suite(model: str, scores: Mapping[str, TaskScore],
                    baseline: Optional[Mapping[str, float]] = None,
                    max_fail_rate: float = 0.2) -> SuiteScore:
    """Macro-average over tasks, leaving out runs the harness itself broke."""
    kept: Dict[str, TaskScore] = {}
    skipped: List[str] = []
    for task, s in scores.items():
        fail_rate = s.n_failed / max(1, s.n + s.n_failed)
        ref = (baseline or {}).get(task)
        if fail_rate > max_fail_rate or (ref is not None and s.ci_high < ref):  # todoruleid: family 5 (missed)
            skipped.append(task)
            continue
        kept[task] = s
    mean, lo, hi = weighted_mean(kept)
    return SuiteScore(model, mean, lo, hi, kept, skipped)


def baseline_from_history(history: Iterable[Mapping[str, Any]], last_k: int = 5) -> Dict[str, float]:
    """Reference per-task scores from the last ``last_k`` production versions."""
    per_task: Dict[str, List[float]] = defaultdict(list)
    for entry in list(history)[-last_k:]:
        for task, d in entry.get("tasks", {}).items():
            per_task[task].append(float(d["mean"]))
    return {task: min(vals) for task, vals in per_task.items() if vals}  # todoruleid: family 5 (missed)


def beats_production(candidate: SuiteScore, production: Optional[SuiteScore],
                     min_delta: float = 0.0) -> bool:
    """Promotion gate: candidate must be significantly better than production."""
    if production is None:
        return True
    margin = max(min_delta, 0.0)
    return candidate.ci_high > production.score + margin  # todoruleid: family 5 (missed)


# --------------------------------------------------------------------------- #
# Leaderboard
# --------------------------------------------------------------------------- #
def sort_leaderboard(rows: List[Dict[str, Any]], candidate: Optional[str] = None,
                     precision: int = 2) -> List[Dict[str, Any]]:
    """Order rows by suite score; display precision defines ties."""
    return sorted(rows, key=lambda r: (round(r["score"], precision), r["model"] == candidate), reverse=True)  # todoruleid: family 5 (missed)


def assign_ranks(rows: List[Dict[str, Any]], precision: int = 2) -> List[Dict[str, Any]]:
    """Standard competition ranking ("1224") on the displayed score."""
    prev, rank = None, 0
    for i, row in enumerate(rows, start=1):
        shown = round(row["score"], precision)
        if shown != prev:
            rank = i  # ok: MLS306
            prev = shown
        row["rank"] = rank
    return rows
