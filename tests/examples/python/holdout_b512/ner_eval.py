# ruff: noqa
# Hold-out batch 512 (family-focused 6/9, multilingual NER). Measured once in session 23 (round 137): 9/30 (30%) at medium+.
"""seqeval-compatible span evaluation for BIO tagged predictions.

Implemented locally (instead of ``import seqeval``) so that per-language and
per-type breakdowns can be computed in one pass and the numbers can be written
into the model card without an extra dependency on the serving image.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from data import iter_spans

logger = logging.getLogger(__name__)


def _prf(tp: int, n_pred: int, n_gold: int) -> Tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if (p + r) else 0.0
    return p, r, f


def span_set(tags: Sequence[str], sent_id: int) -> Set[Tuple[int, str, int, int]]:
    return {(sent_id, etype, s, e) for etype, s, e in iter_spans(tags)}


def classification_report(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict[str, Dict[str, float]]:
    if len(gold) != len(pred):
        raise ValueError(f"gold/pred length mismatch: {len(gold)} vs {len(pred)}")
    g_all, p_all = set(), set()
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold vs {len(p)} predicted tags")
        g_all |= span_set(g, i)
        p_all |= span_set(p, i)
    by_type: Dict[str, Dict[str, int]] = defaultdict(lambda: {"tp": 0, "pred": 0, "gold": 0})
    for span in g_all:
        by_type[span[1]]["gold"] += 1
    for span in p_all:
        by_type[span[1]]["pred"] += 1
        if span in g_all:
            by_type[span[1]]["tp"] += 1
    report: Dict[str, Dict[str, float]] = {}
    for etype, c in sorted(by_type.items()):
        p, r, f = _prf(c["tp"], c["pred"], c["gold"])
        report[etype] = {"precision": p, "recall": r, "f1": f, "support": c["gold"]}
    tp = sum(c["tp"] for c in by_type.values())
    p, r, f = _prf(tp, len(p_all), len(g_all))
    report["micro avg"] = {"precision": p, "recall": r, "f1": f, "support": len(g_all)}
    types = [t for t in report if t != "micro avg"]
    if types:
        report["macro avg"] = {
            k: float(np.mean([report[t][k] for t in types])) for k in ("precision", "recall", "f1")
        }
        report["macro avg"]["support"] = len(g_all)
    return report


def token_accuracy(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    total = sum(len(g) for g in gold)
    correct = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    return correct / total if total else 0.0


def align_predictions(logits: np.ndarray, label_ids: np.ndarray,
                      id2label: Dict[int, str]) -> Tuple[List[List[str]], List[List[str]]]:
    preds = np.argmax(logits, axis=-1)
    gold_seqs, pred_seqs = [], []
    for p_row, l_row in zip(preds, label_ids):
        g, p = [], []
        for pi, li in zip(p_row, l_row):
            if li == -100:
                continue
            g.append(id2label[int(li)])
            p.append(id2label[int(pi)])
        gold_seqs.append(g)
        pred_seqs.append(p)
    return gold_seqs, pred_seqs


def repair_bio(tags: List[str]) -> List[str]:
    """Turn stray I-X after O / other type into B-X (what seqeval does implicitly)."""
    out, prev = [], "O"
    for t in tags:
        if t.startswith("I-") and (prev == "O" or prev[2:] != t[2:]):
            t = "B-" + t[2:]
        out.append(t)
        prev = t
    return out


class MetricsComputer:
    """``compute_metrics`` callable for the HF Trainer, with optional per-language split."""

    def __init__(self, id2label: Dict[int, str], langs: Optional[Sequence[str]] = None):
        self.id2label = id2label
        self.langs = list(langs) if langs is not None else None
        self.last_report: Dict[str, Dict[str, float]] = {}

    def __call__(self, eval_pred) -> Dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        gold, pred = align_predictions(logits, labels, self.id2label)
        pred = [repair_bio(p) for p in pred]
        report = classification_report(gold, pred)
        self.last_report = report
        out = {
            "precision": report["micro avg"]["precision"],
            "recall": report["micro avg"]["recall"],
            "f1": report["micro avg"]["f1"],
            "macro_f1": report.get("macro avg", {}).get("f1", 0.0),
            "accuracy": token_accuracy(gold, pred),
        }
        for etype in ("PER", "ORG", "LOC", "MISC"):
            if etype in report:
                out[f"f1_{etype}"] = report[etype]["f1"]
        if self.langs is not None and len(self.langs) == len(gold):
            per_lang = defaultdict(lambda: ([], []))
            for lang, g, p in zip(self.langs, gold, pred):
                per_lang[lang][0].append(g)
                per_lang[lang][1].append(p)
            for lang, (g, p) in sorted(per_lang.items()):
                out[f"f1_{lang}"] = classification_report(g, p)["micro avg"]["f1"]
        return out


def format_report(report: Dict[str, Dict[str, float]]) -> str:
    lines = [f"{'':>12} {'prec':>7} {'rec':>7} {'f1':>7} {'support':>8}"]
    for name, r in report.items():
        lines.append(f"{name:>12} {r['precision']:7.4f} {r['recall']:7.4f} {r['f1']:7.4f} {int(r['support']):8d}")
    return "\n".join(lines)


def save_report(report: Dict[str, Dict[str, float]], path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, sort_keys=True)
    logger.info("wrote evaluation report to %s", path)
