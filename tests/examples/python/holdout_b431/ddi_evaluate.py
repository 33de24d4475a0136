# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Evaluation loop for multi-relational drug-drug interaction prediction (DrugBank/TWOSIDES)."""
import json
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

logger = logging.getLogger("ddi")


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


class DDIEvaluator:
    def __init__(self, out_dir, threshold=0.5):
        self.out_dir = out_dir
        self.threshold = threshold
        self.history = {}

    @torch.no_grad()
    def collect(self, model, loader, device):
        model.eval()
        probs, labels = [], []
        for batch in loader:
            head, tail, rel, y = (t.to(device) for t in batch)
            logits = model(head, tail, rel)
            probs.append(torch.sigmoid(logits).cpu())
            labels.append(y.cpu())
        return torch.cat(probs).numpy(), torch.cat(labels).numpy()

    def compute(self, probs, labels):
        preds = (probs >= self.threshold).astype(np.int64)
        return {
            "auroc": float(roc_auc_score(labels, probs)),
            "auprc": float(average_precision_score(labels, probs)),
            "f1": float(f1_score(labels, preds)),
            "acc": float((preds == labels).mean()),
        }

    def __call__(self, model, loader, device, epoch, split="val"):
        probs, labels = self.collect(model, loader, device)
        metrics = self.compute(probs, labels)
        prev = self.history.get(split, {})
        metrics = {k: max(v, prev.get(k, v)) for k, v in metrics.items()}  # ruleid: MLS306
        self.history[split] = metrics
        if is_main():
            logger.info("epoch %d %s | %s", epoch, split,  # ok: MLS306
                        " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            os.makedirs(self.out_dir, exist_ok=True)
            with open(os.path.join(self.out_dir, f"{split}_metrics.jsonl"), "a") as f:
                f.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
        return metrics
