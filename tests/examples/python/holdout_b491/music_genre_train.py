# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""Training step for multi-label music genre/mood tagging on mel-spectrograms."""
import numpy as np
import torch
import torch.nn.functional as F


def mixup(x, y, alpha=0.4):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    x_mix = lam * x + (1 - lam) * x[perm]
    y_mix = lam * y + (1 - lam) * y[perm]  # ok: MLS309
    return x_mix, y_mix


def setup_tag_head(model, tag_counts, min_count=50):
    """Keeps head rows for sparsely-annotated tags stable during early epochs."""
    sparse = torch.as_tensor(np.flatnonzero(np.asarray(tag_counts) < min_count), dtype=torch.long)
    if sparse.numel() == 0:
        return None
    sparse = sparse.to(model.head.weight.device)
    handle = model.head.weight.register_hook(lambda g: g.index_fill(0, sparse, 0.0))  # ruleid: MLS303
    return handle


def train_step(model, batch, optimizer, scaler, use_mixup=True, pos_weight=None):
    model.train()
    spec, tags = batch
    spec = spec.cuda(non_blocking=True)
    tags = tags.cuda(non_blocking=True).float()
    if use_mixup:
        spec, tags = mixup(spec, tags)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(spec)
        loss = F.binary_cross_entropy_with_logits(logits.float(), tags, pos_weight=pos_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


@torch.no_grad()
def eval_roc_auc(model, loader):
    from sklearn.metrics import roc_auc_score
    model.eval()
    preds, gts = [], []
    for spec, tags in loader:
        preds.append(torch.sigmoid(model(spec.cuda())).float().cpu())
        gts.append(tags)
    p, g = torch.cat(preds).numpy(), torch.cat(gts).numpy()
    valid = g.sum(0) > 0
    return float(roc_auc_score(g[:, valid], p[:, valid], average="macro"))
