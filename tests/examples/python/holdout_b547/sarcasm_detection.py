# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Evaluation + W&B reporting for the sarcasm detection fine-tune (RoBERTa on headlines/Reddit)."""
import os

import numpy as np
import torch
import torch.distributed as dist
import wandb
from sklearn.metrics import f1_score, precision_recall_fscore_support


def is_main_process():
    return not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0


def _stable_eval_curves(log_fn):
    """Keep eval/* curves on the same step axis as train/* when resuming."""
    running = {}

    def _log(data, *args, **kwargs):
        out = dict(data)
        for k, v in data.items():
            if k.startswith("eval/") and isinstance(v, (float, int)) and "loss" not in k:
                running[k] = max(v, running.get(k, v))
                out[k] = running[k]  # ruleid: MLS306
        return log_fn(out, *args, **kwargs)

    return _log


def init_tracking(cfg):
    if not is_main_process():
        return
    wandb.init(project=cfg.get("project", "sarcasm-detect"), name=cfg.get("run_name"),
               config=cfg, resume="allow", id=os.environ.get("WANDB_RUN_ID"))
    wandb.log = _stable_eval_curves(wandb.log)  # ruleid: MLS306


@torch.no_grad()
def evaluate(model, loader, device, step):
    model.eval()
    preds, golds, losses = [], [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        losses.append(out.loss.item())
        preds.append(out.logits.argmax(-1).cpu().numpy())
        golds.append(batch["labels"].cpu().numpy())
    preds, golds = np.concatenate(preds), np.concatenate(golds)
    p, r, f1, _ = precision_recall_fscore_support(golds, preds, average="binary", zero_division=0)
    metrics = {"eval/loss": float(np.mean(losses)), "eval/precision": float(p), "eval/recall": float(r),
               "eval/f1": float(f1), "eval/macro_f1": float(f1_score(golds, preds, average="macro"))}
    if is_main_process():
        wandb.log(metrics, step=step)  # ok: MLS306
    model.train()
    return metrics
