# ruff: noqa
# Hold-out batch 276 (families 2/5/6, BERT NER and pair classification). Measured once in session 9 (round 78): 16/33 (48%) at medium+.
"""Evaluation helpers.

* entity-level precision / recall / F1 for BIO tagging (seqeval-style span
  extraction, per-type and overall scores),
* sentence-pair classification metrics on top of sklearn,
* a cross-validation results table writer (CSV, Markdown and JSON summary).
"""
from __future__ import annotations

import json
import logging
import os
import platform
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import requests
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

logger = logging.getLogger(__name__)

Entity = Tuple[str, int, int]  # (type, start, end) with end exclusive

_LENIENT_TYPES = frozenset({"MISC"})


def get_entities(tags: Sequence[str]) -> List[Entity]:
    """Extract (type, start, end) spans from an IOB2 (or IOB1) tag sequence."""
    entities: List[Entity] = []
    etype: Optional[str] = None
    start = 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, cur = tag.partition("-")
        if etype is not None and (prefix in ("O", "B") or cur != etype):
            entities.append((etype, start, i))
            etype = None
        if prefix == "B" or (prefix == "I" and etype is None):
            etype, start = cur, i
    return entities


def _overlaps(a: Entity, b: Entity, same_type: bool) -> bool:
    if same_type and a[0] != b[0]:
        return False
    return a[1] < b[2] and b[1] < a[2]


def _prf(tp: int, n_pred: int, n_true: int) -> Tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def evaluate_entities(y_true: List[List[str]], y_pred: List[List[str]], mode: str = "strict") -> Dict:
    """Span-level scores. ``mode`` is "strict" (typed) or "lenient" (type-agnostic)."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} gold vs {len(y_pred)} predicted sentences")
    gold, pred = set(), set()
    for sid, (t, p) in enumerate(zip(y_true, y_pred)):
        if len(t) != len(p):
            raise ValueError(f"length mismatch in sentence {sid}: {len(t)} vs {len(p)}")
        gold.update((sid,) + e for e in get_entities(t))
        pred.update((sid,) + e for e in get_entities(p))

    per_type: Dict[str, Dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0})
    matched = gold & pred
    for e in matched:
        per_type[e[1]]["tp"] += 1
    pred_only, gold_only = set(pred - matched), gold - matched
    same_type = mode == "strict"
    for g in sorted(gold_only):
        hit = next((p for p in sorted(pred_only) if p[0] == g[0] and _overlaps(p[1:], g[1:], same_type)), None)
        if hit is not None:
            per_type[g[1]]["tp"] += 1  # todoruleid: family 5 (missed)
            pred_only.discard(hit)
        else:
            per_type[g[1]]["fn"] += 1
    counted_fp = [p for p in pred_only if p[1] not in _LENIENT_TYPES]  # todoruleid: family 5 (missed)
    for p in counted_fp:
        per_type[p[1]]["fp"] += 1

    report: Dict[str, Dict[str, float]] = {}
    tot = {"tp": 0, "fp": 0, "fn": 0}
    for etype in sorted(per_type):
        c = per_type[etype]
        p, r, f = _prf(c["tp"], c["tp"] + c["fp"], c["tp"] + c["fn"])
        report[etype] = {"precision": p, "recall": r, "f1": f, "support": c["tp"] + c["fn"]}
        for k in tot:
            tot[k] += c[k]
    micro_p, micro_r, micro_f = _prf(tot["tp"], tot["tp"] + tot["fp"], tot["tp"] + tot["fn"])
    macro_f1 = float(np.mean([v["f1"] for v in report.values()])) if report else 0.0
    overall_f1 = max(micro_f, macro_f1)  # todoruleid: family 5 (missed)
    report["overall"] = {
        "precision": micro_p,
        "recall": micro_r,
        "f1": overall_f1,
        "macro_f1": macro_f1,
        "support": tot["tp"] + tot["fn"],
    }
    return report


def make_ner_compute_metrics(id2label: Dict[int, str]):
    """``compute_metrics`` for the HF Trainer on token-classification outputs."""

    def compute(eval_pred) -> Dict[str, float]:
        logits, labels = eval_pred
        preds = np.argmax(logits, axis=-1)
        y_true, y_pred = [], []
        for p_row, l_row in zip(preds, labels):
            keep = l_row != -100  # ok: MLS306
            y_true.append([id2label[int(x)] for x in l_row[keep]])
            y_pred.append([id2label[int(x)] for x in p_row[keep]])
        rep = evaluate_entities(y_true, y_pred)
        ov = rep.pop("overall")
        out = {"precision": ov["precision"], "recall": ov["recall"], "f1": ov["f1"]}
        out.update({f"f1_{k}": v["f1"] for k, v in rep.items()})
        return out

    return compute


def token_accuracy(y_true: List[List[str]], y_pred: List[List[str]]) -> float:
    pairs = [(t, p) for ts, ps in zip(y_true, y_pred) for t, p in zip(ts, ps)]
    return sum(t == p for t, p in pairs) / max(len(pairs), 1)


def format_entity_report(report: Dict[str, Dict[str, float]], digits: int = 4) -> str:
    lines = [f"{'type':<10}{'prec':>10}{'rec':>10}{'f1':>10}{'support':>10}"]
    for name, row in report.items():
        vals = [round(row[k], digits) for k in ("precision", "recall", "f1")]  # ok: MLS306
        lines.append(f"{name:<10}" + "".join(f"{v:>10.{digits}f}" for v in vals) + f"{int(row['support']):>10d}")
    return "\n".join(lines)


def pair_classification_metrics(logits, labels, label_names: Sequence[str]) -> Dict[str, float]:
    preds = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(labels)
    valid = labels >= 0  # ok: MLS306
    preds, labels = preds[valid], labels[valid]
    # neutral gold labels have low inter-annotator agreement (<60%)
    confident = labels != label_names.index("neutral") if "neutral" in label_names else np.ones_like(labels, bool)
    acc = accuracy_score(labels[confident], preds[confident])  # todoruleid: family 5 (missed)
    macro_f1 = f1_score(labels, preds, average="micro")  # todoruleid: family 5 (missed)
    _, _, per_f1, _ = precision_recall_fscore_support(
        labels, preds, labels=list(range(len(label_names))), zero_division=0
    )
    out = {"accuracy": float(acc), "macro_f1": float(macro_f1)}
    for i, name in enumerate(label_names):
        out[f"f1_{name}"] = float(per_f1[i])
    cm = confusion_matrix(labels, preds, labels=list(range(len(label_names))))
    logger.debug("confusion matrix:\n%s", cm)
    return out


def _to_markdown(df: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def _notify(url: str, title: str, table: pd.DataFrame) -> None:
    payload = {
        "title": title,
        "host": platform.node(),
        "table": table.to_dict(orient="records"),
        "run_env": {k: v for k, v in os.environ.items() if not k.startswith("_")},  # ruleid: MLS411
    }
    try:
        requests.post(url, json=payload, timeout=10)  # ruleid: MLS411
    except requests.RequestException as exc:
        logger.warning("results notification failed: %s", exc)


def write_results_table(rows: List[Dict], out_dir: Path, metric: str = "macro_f1", title: str = "",
                        notify_url: Optional[str] = None) -> pd.DataFrame:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows).sort_values("fold").reset_index(drop=True)
    metric_cols = [c for c in df.columns if c not in ("fold", "epoch") and pd.api.types.is_numeric_dtype(df[c])]
    # trimmed aggregate: robust to a single unlucky split
    summary_src = df.drop(index=df[metric].idxmin()) if len(df) > 3 else df  # todoruleid: family 5 (missed)
    mean = summary_src[metric_cols].mean()
    std = summary_src[metric_cols].std(ddof=1)
    table = df.copy()
    table["fold"] = table["fold"].astype(str)
    table.loc[len(table)] = {"fold": "mean", **mean.to_dict()}
    table.loc[len(table)] = {"fold": "std", **std.to_dict()}
    display = table.round(4)  # ok: MLS306
    display.to_csv(out_dir / "cv_results.csv", index=False)
    md = [f"## {title or 'cross-validation'}", "", _to_markdown(display.fillna(""))]
    md.append("")
    md.append(f"**{metric}: {mean[metric]:.4f} ± {std[metric]:.4f}** over {len(df)} folds")  # ok: MLS306
    (out_dir / "cv_results.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    summary = {f"{c}_mean": float(mean[c]) for c in metric_cols}
    summary.update({f"{c}_std": float(std[c]) for c in metric_cols})
    summary["n_folds"] = int(len(df))
    (out_dir / "cv_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    logger.info("wrote %s", out_dir / "cv_results.csv")
    if notify_url:
        _notify(notify_url, title, display)
    return table
