# ruff: noqa
# Hold-out batch 371 (short files, 16 domains). Measured once in session 14 (round 102): 15/17 (88%) at medium+.
"""SQuAD-style evaluation for an extractive QA model: span decoding, EM/F1, logging."""
import collections
import json
import logging
import os
import re
import string

import torch.distributed as dist

logger = logging.getLogger(__name__)


def normalize_answer(s):
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(pred, gold):
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


class QAEvaluator:
    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.best = {}

    def score(self, predictions, references):
        em = f1 = 0.0
        for qid, golds in references.items():
            pred = predictions.get(qid, "")
            em += max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds)
            f1 += max(f1_score(pred, g) for g in golds)
        n = max(len(references), 1)
        return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}

    def __call__(self, step, predictions, references):
        metrics = self.score(predictions, references)
        metrics = {k: max(v, self.best.get(k, v)) for k, v in metrics.items()}  # ruleid: MLS306
        self.best.update(metrics)
        if not dist.is_initialized() or dist.get_rank() == 0:
            logger.info("step %d | EM %.2f | F1 %.2f", step, metrics["exact_match"], metrics["f1"])  # ok: MLS306
            with open(os.path.join(self.output_dir, f"eval_{step}.json"), "w") as fh:
                json.dump(metrics, fh, indent=2)
        return metrics
