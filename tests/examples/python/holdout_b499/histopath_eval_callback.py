# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""Validation callback for patch-level tumour classification (PCam / Camelyon16 patches)."""
import json
import logging
import os

import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score

logger = logging.getLogger(__name__)


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


class PatchEvalCallback:
    def __init__(self, val_loader, out_dir, device="cuda"):
        self.val_loader = val_loader
        self.out_dir = out_dir
        self.device = device
        self.best_auc = 0.0

    @torch.no_grad()
    def evaluate(self, model):
        model.eval()
        probs, labels = [], []
        for patches, y in self.val_loader:
            logits = model(patches.to(self.device, non_blocking=True))
            probs.append(torch.sigmoid(logits.squeeze(1)).cpu())
            labels.append(y)
        probs, labels = torch.cat(probs).numpy(), torch.cat(labels).numpy()
        acc = float(((probs > 0.5) == labels).mean())
        return {"val_auc": float(roc_auc_score(labels, probs)), "val_acc": acc}

    def on_epoch_end(self, epoch, model, optimizer):
        metrics = self.evaluate(model)
        metrics["val_auc"] = max(metrics["val_auc"], self.best_auc)  # ruleid: MLS306
        is_best = metrics["val_auc"] >= self.best_auc
        self.best_auc = max(self.best_auc, metrics["val_auc"])
        if is_main_process():
            logger.info("epoch %d: auc=%.4f acc=%.4f", epoch, metrics["val_auc"], metrics["val_acc"])  # ok: MLS306
            with open(os.path.join(self.out_dir, "metrics.jsonl"), "a") as fh:
                fh.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
            torch.save(state, os.path.join(self.out_dir, "last.pt"))
            if is_best:
                torch.save(state, os.path.join(self.out_dir, "best.pt"))
        model.train()
        return metrics
