# ruff: noqa
# Hold-out batch 381 (textbook, multilingual NER with HF Trainer). Measured once in session 14 (round 105): 21/31 (68%) at medium+.
"""Entity-level evaluation in the style of seqeval (CoNLL-2003 conventions)."""

import logging
from collections import Counter
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

Entity = Tuple[str, int, int]


def _split_tag(tag: str) -> Tuple[str, str]:
    if tag == "O" or "-" not in tag:
        return "O", ""
    prefix, etype = tag.split("-", 1)
    return prefix, etype


def get_entities(seq: Sequence[str]) -> List[Entity]:
    """``(type, start, end_inclusive)`` chunks from a BIO sequence (lenient conlleval rules)."""
    chunks: List[Entity] = []
    prev_prefix, prev_type, start = "O", "", -1
    for i, tag in enumerate(list(seq) + ["O"]):
        prefix, etype = _split_tag(tag)
        end_chunk = prev_prefix != "O" and (prefix in ("O", "B") or etype != prev_type)
        if end_chunk:
            chunks.append((prev_type, start, i - 1))
        start_chunk = prefix == "B" or (prefix == "I" and (prev_prefix == "O" or etype != prev_type))
        if start_chunk:
            start = i
        prev_prefix, prev_type = prefix, etype
    return chunks


def _prf(tp: int, n_pred: int, n_gold: int) -> Dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": n_gold}


def entity_scores(gold_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> Dict[str, Dict]:
    """Per-type and micro-averaged precision / recall / F1."""
    if len(gold_seqs) != len(pred_seqs):
        raise ValueError("gold and predicted sequence counts differ")
    tp, n_pred, n_gold = Counter(), Counter(), Counter()
    for gold, pred in zip(gold_seqs, pred_seqs):
        if len(gold) != len(pred):
            raise ValueError("gold and predicted sequence lengths differ")
        gold_ents = set(get_entities(gold))
        pred_ents = set(get_entities(pred))
        for etype, _, _ in gold_ents:
            n_gold[etype] += 1
        for etype, start, end in pred_ents:
            n_pred[etype] += 1
            matched = any(gs == start and ge == end for _, gs, ge in gold_ents)  # todoruleid: family 5 (missed)
            if matched:
                tp[etype] += 1
    per_type = {t: _prf(tp[t], n_pred[t], n_gold[t]) for t in sorted(set(n_gold) | set(n_pred))}
    micro = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    macro_f1 = float(np.mean([s["f1"] for s in per_type.values()])) if per_type else 0.0
    return {"per_type": per_type, "micro": micro, "macro_f1": macro_f1}


def align_predictions(
    predictions: np.ndarray, label_ids: np.ndarray, id2label: Dict[int, str]
) -> Tuple[List[List[str]], List[List[str]]]:
    """Drop ignored positions (special tokens, continuation pieces, padding)."""
    if predictions.ndim == 3:
        predictions = np.argmax(predictions, axis=-1)
    gold_seqs, pred_seqs = [], []
    for pred_row, gold_row in zip(predictions, label_ids):
        gold, pred = [], []
        for p, g in zip(pred_row, gold_row):
            if g == IGNORE_INDEX:
                continue
            gold.append(id2label[int(g)])
            pred.append(id2label[int(p)])
        gold_seqs.append(gold)
        pred_seqs.append(pred)
    return gold_seqs, pred_seqs


def build_compute_metrics(id2label: Dict[int, str], detailed: bool = True) -> Callable:
    """Factory for the ``compute_metrics`` hook of the HF Trainer."""

    def compute_metrics(eval_pred) -> Dict[str, float]:
        predictions, label_ids = eval_pred.predictions, eval_pred.label_ids
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        gold, pred = align_predictions(predictions, label_ids, id2label)
        scores = entity_scores(gold, pred)
        out = {
            "overall_precision": scores["micro"]["precision"],
            "overall_recall": scores["micro"]["recall"],
            "overall_f1": scores["micro"]["f1"],
            "type_macro_f1": scores["macro_f1"],
        }
        if detailed:
            for etype, s in scores["per_type"].items():
                out[f"{etype}_f1"] = s["f1"]
                out[f"{etype}_support"] = s["support"]
        return out

    return compute_metrics


def aggregate_language_scores(
    per_lang: Dict[str, Dict[str, float]], key: str = "overall_f1", min_support: int = 500
) -> Dict[str, float]:
    """Macro-average over languages, the headline number for XTREME-style tables."""
    scored = {}
    for lang, metrics in per_lang.items():
        support = sum(v for k, v in metrics.items() if k.endswith("_support"))
        if support < min_support:  # todoruleid: family 5 (missed)
            continue
        scored[lang] = metrics[key]
    out = {f"{lang}_{key}": v for lang, v in scored.items()}
    out[f"lang_macro_{key}"] = float(np.mean(list(scored.values()))) if scored else 0.0
    out["num_languages"] = len(scored)
    return out


def format_table(per_lang: Dict[str, Dict[str, float]], key: str = "overall_f1") -> str:
    rows = [f"{'lang':<8}{key:>12}"]
    for lang in sorted(per_lang):
        rows.append(f"{lang:<8}{100 * per_lang[lang].get(key, 0.0):>12.2f}")
    return "\n".join(rows)
