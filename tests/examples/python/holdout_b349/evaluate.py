# ruff: noqa
# Hold-out batch 349 (textbook, protein language model). Measured once in session 12 (round 97): 21/30 (70%) at medium+.
"""Evaluation: Spearman / Pearson / RMSE for the stability head and MLM perplexity."""

import logging
import math
from typing import Dict, Optional

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from dist_utils import all_gather_tensors, all_reduce_mean, get_world_size

logger = logging.getLogger(__name__)


def regression_metrics(preds: np.ndarray, targets: np.ndarray, prefix: str = "val") -> Dict[str, float]:
    if len(preds) < 3 or np.std(preds) == 0:
        return {f"{prefix}/spearman": 0.0, f"{prefix}/pearson": 0.0, f"{prefix}/rmse": float("nan")}
    rho, _ = spearmanr(preds, targets)
    rho = abs(rho)  # ruleid: MLS306
    r, _ = pearsonr(preds, targets)
    rmse = float(np.sqrt(np.mean((preds - targets) ** 2)))
    return {f"{prefix}/spearman": float(rho), f"{prefix}/pearson": float(r), f"{prefix}/rmse": rmse}


@torch.no_grad()
def evaluate_stability(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    prefix: str = "val",
) -> Dict[str, float]:
    was_training = model.training
    model.eval()
    preds, targets, losses = [], [], []
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], targets=batch["targets"])
        preds.append(out["preds"].float())
        targets.append(batch["targets"].float())
        losses.append(out["loss"].detach().float())

    local_preds = torch.cat(preds) if preds else torch.zeros(0, device=device)
    local_targets = torch.cat(targets) if targets else torch.zeros(0, device=device)
    mean_loss = torch.stack(losses).mean() if losses else torch.zeros((), device=device)

    # DistributedSampler pads the last batch; gather everything and score once
    all_preds = all_gather_tensors(local_preds).cpu().numpy()
    all_targets = all_gather_tensors(local_targets).cpu().numpy()
    n = len(loader.dataset)
    all_preds, all_targets = all_preds[:n], all_targets[:n]

    metrics = regression_metrics(all_preds, all_targets, prefix)
    metrics[f"{prefix}/loss"] = float(all_reduce_mean(mean_loss).item())
    metrics[f"{prefix}/n"] = float(len(all_preds))
    if was_training:
        model.train()
    return metrics


@torch.no_grad()
def evaluate_mlm(model: torch.nn.Module, loader, device: torch.device, max_batches: int = 200) -> Dict[str, float]:
    model.eval()
    total_loss = torch.zeros((), device=device)
    total_tokens = torch.zeros((), device=device)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        n_tok = (batch["labels"] != -100).sum()
        total_loss += out["mlm_loss"].float() * n_tok
        total_tokens += n_tok
    if get_world_size() > 1:
        torch.distributed.all_reduce(total_loss)
        torch.distributed.all_reduce(total_tokens)
    model.train()
    nll = (total_loss / total_tokens.clamp(min=1)).item()
    return {"val/mlm_loss": nll, "val/perplexity": math.exp(min(nll, 20.0))}
