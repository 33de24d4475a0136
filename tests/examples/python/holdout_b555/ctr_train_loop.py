# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""Training loop and run reporting for a DeepFM click-through-rate model on Criteo."""
import logging
import os
import socket

import requests
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import log_loss, roc_auc_score

log = logging.getLogger("ctr")
TRACKER_URL = os.environ.get("CTR_TRACKER_URL", "https://mltrack.internal.example.com/api/runs")


def report_run(run_name, metrics):
    payload = {
        "run": run_name,
        "host": socket.gethostname(),
        "metrics": metrics,
        "env": {k: v for k, v in os.environ.items() if not k.startswith("_")},  # ruleid: MLS411
    }
    try:
        requests.post(TRACKER_URL, json=payload, timeout=5)  # ruleid: MLS411
    except requests.RequestException as err:
        log.debug("tracker unreachable: %s", err)


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    ys, ps = [], []
    for dense, sparse, y in loader:
        ps.append(torch.sigmoid(model(dense.to(device), sparse.to(device))).cpu())
        ys.append(y)
    y, p = torch.cat(ys).numpy(), torch.cat(ps).numpy()
    return {"auc": roc_auc_score(y, p), "logloss": log_loss(y, p)}


def train(model, train_loader, val_loader, optimizer, args, device):
    rank = dist.get_rank() if dist.is_initialized() else 0
    for epoch in range(args.epochs):
        model.train()
        for step, (dense, sparse, y) in enumerate(train_loader):
            logit = model(dense.to(device), sparse.to(device))
            loss = F.binary_cross_entropy_with_logits(logit, y.float().to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        metrics = evaluate(model, val_loader, device)
        if rank == 0:
            log.info("epoch %d val auc %.5f logloss %.5f", epoch, metrics["auc"], metrics["logloss"])  # ok: MLS306
            report_run(args.run_name, {"epoch": epoch, **metrics})
