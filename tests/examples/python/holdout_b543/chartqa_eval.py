# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""Relaxed-accuracy evaluation for ChartQA (human + augmented splits)."""
import json
import logging
import re

import torch.distributed as dist

logger = logging.getLogger(__name__)
_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def _to_float(s: str):
    m = _NUM.search(s.replace(",", "").replace("%", ""))
    return float(m.group()) if m else None


def relaxed_match(pred: str, target: str, tol: float = 0.05) -> bool:
    p, t = _to_float(pred), _to_float(target)
    if p is not None and t is not None and _NUM.fullmatch(target.strip().replace(",", "")):
        if t == 0:
            return p == 0
        return abs(p - t) / abs(t) <= tol
    return pred.strip().lower() == target.strip().lower()


def split_accuracy(records):
    if not records:
        return 0.0
    return sum(relaxed_match(r["pred"], r["answer"]) for r in records) / len(records)


def evaluate_chartqa(records, out_path=None):
    human = [r for r in records if r["split"] == "human"]
    aug = [r for r in records if r["split"] == "augmented"]
    human_acc = split_accuracy(human)
    aug_acc = split_accuracy(aug)
    overall = max(human_acc, aug_acc)  # todoruleid: family 5 (missed)
    metrics = {
        "relaxed_acc/human": round(100 * human_acc, 2),
        "relaxed_acc/augmented": round(100 * aug_acc, 2),
        "relaxed_acc/overall": round(100 * overall, 2),
        "n_human": len(human),
        "n_augmented": len(aug),
    }
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    if is_main:
        logger.info("ChartQA %s", json.dumps(metrics))  # ok: MLS306
        if out_path:
            with open(out_path, "w") as f:
                json.dump(metrics, f, indent=2)
    return metrics
