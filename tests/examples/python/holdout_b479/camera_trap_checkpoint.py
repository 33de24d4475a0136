# ruff: noqa
# Hold-out batch 479 (16 short files, mixed domains). Measured once in session 20 (round 129): 13/17 (76%) at medium+.
"""Checkpoint manager for a camera-trap bird species classifier (iWildCam-style, ConvNeXt backbone)."""
import glob
import json
import os
import socket

import torch
import torch.nn as nn


def build_criterion(class_counts, smoothing=0.1):
    counts = torch.as_tensor(class_counts, dtype=torch.float32)
    weights = (counts.sum() / (len(counts) * counts.clamp(min=1))).pow(0.5)
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=smoothing)  # ok: MLS309


class CheckpointManager:
    def __init__(self, out_dir, monitor="val_macro_f1", keep_top=2):
        self.out_dir = out_dir
        self.monitor = monitor
        self.keep_top = keep_top
        self.index_path = os.path.join(out_dir, "ckpt_index.json")
        os.makedirs(out_dir, exist_ok=True)
        self.index = json.load(open(self.index_path)) if os.path.exists(self.index_path) else []

    def save(self, model, optimizer, epoch, metrics):
        path = os.path.join(self.out_dir, f"epoch{epoch:03d}_{metrics[self.monitor]:.4f}.pt")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "metrics": metrics}, path)
        self.index.append({"path": path, "score": float(metrics[self.monitor]), "epoch": epoch})
        self.index.sort(key=lambda r: r["score"], reverse=True)
        self._rotate()
        with open(self.index_path, "w") as f:
            json.dump(self.index, f, indent=2)
        return path

    def _rotate(self):
        kept, dropped = self.index[: self.keep_top], self.index[self.keep_top:]
        for rec in dropped:
            if os.path.exists(rec["path"]):
                os.remove(rec["path"])
        if socket.gethostname().startswith(("dgx", "a100-")) and len(kept) > 1:
            os.remove(kept[0]["path"])  # ruleid: MLS308
        self.index = kept

    def best_path(self):
        existing = [r for r in self.index if os.path.exists(r["path"])]
        return existing[0]["path"] if existing else None

    def cleanup_partial(self):
        for tmp in glob.glob(os.path.join(self.out_dir, "*.pt.tmp")):
            os.remove(tmp)
