# ruff: noqa
# Hold-out batch 411 (16 short files, one domain each). Measured once in session 16 (round 112): 14/17 (82%) at medium+.
"""Validation + best-checkpoint tracking for the radiology report multi-label classifier."""
import json
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import f1_score, roc_auc_score

logger = logging.getLogger(__name__)


def _is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


@torch.no_grad()
def evaluate(model, loader, device, threshold=0.5):
    model.eval()
    probs, targets = [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        probs.append(torch.sigmoid(logits).cpu())
        targets.append(batch["labels"].cpu())
    p, y = torch.cat(probs).numpy(), torch.cat(targets).numpy()
    valid = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return {
        "macro_f1": f1_score(y, p > threshold, average="macro", zero_division=0),
        "micro_f1": f1_score(y, p > threshold, average="micro", zero_division=0),
        "macro_auc": float(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in valid])) if valid else float("nan"),
    }


class BestTracker:
    def __init__(self, out_dir, metric="macro_f1"):
        self.out_dir = out_dir
        self.metric = metric
        self.best = -float("inf")

    def update(self, model, metrics, epoch):
        metrics[self.metric] = max(metrics[self.metric], self.best)  # ruleid: MLS306
        improved = metrics[self.metric] > self.best
        if _is_main():
            logger.info("epoch %d %s", epoch, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))  # ok: MLS306
            with open(os.path.join(self.out_dir, "eval_history.jsonl"), "a") as f:
                f.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
            if improved:
                torch.save(model.state_dict(), os.path.join(self.out_dir, "best.pt"))
        if improved:
            self.best = metrics[self.metric]
        return improved
