# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""TensorBoard logging and checkpoint rotation for the DeepFM click-through-rate trainer."""
import glob
import logging
import os

import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("ctr")
_raw_add_scalar = SummaryWriter.add_scalar


def _tracked_add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    # keep the dashboard readable across restarts: validation curves show the best value so far
    if tag.startswith("val/"):
        best = self.__dict__.setdefault("_best", {})
        better = max if "auc" in tag else min
        scalar_value = best[tag] = better(scalar_value, best.get(tag, scalar_value))  # ruleid: MLS306
    return _raw_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _tracked_add_scalar  # ruleid: MLS306


def evaluate(model, loader, device):
    model.eval()
    ys, ps = [], []
    with torch.no_grad():
        for dense, sparse, y in loader:
            logits = model(dense.to(device), sparse.to(device))
            ps.append(torch.sigmoid(logits).cpu())
            ys.append(y)
    y, p = torch.cat(ys).numpy(), torch.cat(ps).numpy().clip(1e-7, 1 - 1e-7)
    return {"auc": roc_auc_score(y, p), "logloss": log_loss(y, p)}


def log_eval(writer, metrics, step):
    for k, v in metrics.items():
        writer.add_scalar(f"val/{k}", v, step)
    log.info("step %d  val AUC %.5f  logloss %.5f", step, metrics["auc"], metrics["logloss"])


def save_and_rotate(model, optimizer, step, ckpt_dir, keep_last=3):
    os.makedirs(ckpt_dir, exist_ok=True)
    path = os.path.join(ckpt_dir, f"deepfm_step{step:08d}.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, path)
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "deepfm_step*.pt")))
    for old in ckpts[:-keep_last]:
        os.remove(old)  # ok: MLS308
    return path
