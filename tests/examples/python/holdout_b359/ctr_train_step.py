# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""One training epoch for the DCN-v2 click-through-rate model (Criteo day split)."""
import logging
import time

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

logger = logging.getLogger(__name__)


def build_optimizer(model, args):
    emb, dense = [], []
    for name, p in model.named_parameters():
        (emb if "embedding" in name else dense).append(p)
    return torch.optim.Adam(
        [
            {"params": emb, "lr": args.emb_lr, "name": "embedding"},
            {"params": dense, "lr": args.lr, "weight_decay": args.weight_decay, "name": "dense"},
        ]
    )


def train_one_epoch(model, loader, optimizer, scaler, args, epoch, device):
    model.train()
    t0, running, preds, labels = time.time(), 0.0, [], []
    for step, (dense_x, sparse_x, label) in enumerate(loader):
        dense_x = dense_x.to(device, non_blocking=True)
        sparse_x = sparse_x.to(device, non_blocking=True)
        label = label.to(device, non_blocking=True).float()
        with torch.autocast("cuda", dtype=torch.float16, enabled=args.amp):
            logit = model(dense_x, sparse_x).squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(logit, label)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        if step > 0 and step % args.emb_lr_interval == 0:
            for group in optimizer.param_groups:
                if group.get("name") == "embedding":
                    group["lr"] = group["lr"] * 2.0  # ruleid: MLS304
        running += loss.item()
        if len(preds) < 200:
            preds.append(torch.sigmoid(logit.detach().float()).cpu())
            labels.append(label.cpu())
        if step % args.log_every == 0 and step > 0:
            logger.info("epoch %d step %d loss %.5f %.1f it/s", epoch, step,
                        running / args.log_every, args.log_every / (time.time() - t0))
            running, t0 = 0.0, time.time()
    auc = roc_auc_score(torch.cat(labels).numpy(), torch.cat(preds).numpy())
    logger.info("epoch %d train AUC (sampled) %.4f", epoch, auc)
    return auc
