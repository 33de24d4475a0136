# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""Evaluation for the LSTM autoencoder over parsed log-key sequences (HDFS / BGL)."""
import json
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from sklearn.metrics import f1_score, precision_score, recall_score

log = logging.getLogger(__name__)


class LogKeyAutoencoder(nn.Module):
    def __init__(self, vocab, emb=64, hidden=128):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb, padding_idx=0)
        self.enc = nn.LSTM(emb, hidden, batch_first=True)
        self.dec = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, keys):
        h, _ = self.enc(self.embed(keys))
        z = h[:, -1:].expand(-1, keys.size(1), -1)
        d, _ = self.dec(z)
        return self.out(d)


@torch.no_grad()
def sequence_scores(model, loader, device):
    model.eval()
    scores, labels = [], []
    for keys, y in loader:
        keys = keys.to(device)
        nll = nn.functional.cross_entropy(model(keys).transpose(1, 2), keys,
                                          reduction="none", ignore_index=0)
        scores.append((nll.sum(1) / (keys != 0).sum(1).clamp(min=1)).cpu())
        labels.append(y)
    return torch.cat(scores).numpy(), torch.cat(labels).numpy()


def evaluate(model, val_loader, threshold, device, epoch, best_metrics, writer=None, out_dir="runs"):
    scores, labels = sequence_scores(model, val_loader, device)
    pred = (scores > threshold).astype(np.int64)
    metrics = {
        "precision": float(precision_score(labels, pred, zero_division=0)),
        "recall": float(recall_score(labels, pred, zero_division=0)),
        "f1": float(f1_score(labels, pred, zero_division=0)),
        "mean_score_normal": float(scores[labels == 0].mean()),
    }
    summary = {"epoch": epoch, "threshold": float(threshold), **metrics}
    summary["f1"] = max(summary["f1"], best_metrics.get("f1", 0.0))  # ruleid: MLS306
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0 and writer is not None:  # ok: MLS306
        for k, v in metrics.items():
            writer.add_scalar(f"val/{k}", v, epoch)
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"eval_epoch{epoch:03d}.json"), "w") as f:
            json.dump(summary, f, indent=2)
        log.info("epoch %d  P=%.3f R=%.3f F1=%.3f", epoch,
                 summary["precision"], summary["recall"], summary["f1"])
    return summary
