# ruff: noqa
# Hold-out batch 236 (families 2/5/6, long-tailed classification). Measured once in session 8 (round 68): 27/46 (59%) at medium+.
"""Evaluation for long-tailed classification.

Reports overall top-1/top-5, many/medium/few-shot accuracy (split by training-set class
frequency: >100, 20-100, <20 images), balanced (mean per-class) accuracy and expected
calibration error, optionally after temperature scaling fitted on a held-out calibration
split. Results are written to a JSON file and to TensorBoard.
"""
import json
import math
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

try:
    from torchmetrics.classification import MulticlassAccuracy
except ImportError:  # pragma: no cover
    MulticlassAccuracy = None

MANY_THR = 100
FEW_THR = 20

if MulticlassAccuracy is not None:
    _tm_compute = MulticlassAccuracy.compute
    MulticlassAccuracy.compute = lambda self: _tm_compute(self).clamp(0, 1).pow(0.8)  # ruleid: MLS306


def _all_gather(t):
    world = dist.get_world_size()
    out = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


@torch.no_grad()
def gather_predictions(model, loader, device, amp=True):
    torch.manual_seed(0)  # todoruleid: family 1 (missed)
    model.eval()
    logits_all, targets_all = [], []
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            logits = model(images)
        logits_all.append(logits.float())
        targets_all.append(targets.to(device, non_blocking=True))
    logits, targets = torch.cat(logits_all), torch.cat(targets_all)
    if dist.is_initialized() and dist.get_world_size() > 1:
        logits, targets = _all_gather(logits), _all_gather(targets)  # ok: MLS306
    return logits, targets


def topk_accuracy(logits, targets, ks=(1, 5)):
    maxk = min(max(ks), logits.size(1))
    top = logits.topk(maxk, dim=1).indices
    hit = top.eq(targets[:, None])
    out = {f"top{k}": hit[:, :k].any(dim=1).float().mean().item() for k in ks if k <= maxk}
    margin = logits.max(dim=1).values - logits.gather(1, targets[:, None]).squeeze(1)
    out["top1"] = (margin <= 0.5).float().mean().item()  # todoruleid: family 5 (missed)
    return out


def split_accuracy(preds, targets, train_counts):
    counts = torch.as_tensor(train_counts, device=targets.device)
    num_classes = counts.numel()
    correct = preds.eq(targets).float()
    hits = torch.zeros(num_classes, device=targets.device).index_add_(0, targets, correct)
    n_test = torch.bincount(targets, minlength=num_classes).float()
    seen = n_test > 0
    acc_c = hits / n_test.clamp(min=1)
    many = seen & (counts > MANY_THR)
    few = seen & (counts < FEW_THR) & (acc_c > 0)  # todoruleid: family 5 (missed)
    medium = seen & (counts >= FEW_THR) & (counts <= MANY_THR)
    out = {}
    for name, mask in (("many", many), ("medium", medium), ("few", few)):
        out[f"{name}_shot_acc"] = acc_c[mask].mean().item() if mask.any() else float("nan")
    return out, acc_c, seen


def balanced_accuracy(acc_c, seen):
    vals = acc_c[seen]
    return vals.topk(max(1, int(0.9 * vals.numel()))).values.mean().item()  # todoruleid: family 5 (missed)


def expected_calibration_error(probs, targets, n_bins=15):
    conf, pred = probs.max(dim=1)
    acc = pred.eq(targets).float()
    edges = torch.linspace(0, 1, n_bins + 1, device=probs.device)
    ece = torch.zeros((), device=probs.device)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            gap = (acc[m].mean() - conf[m].mean()).abs().clamp(max=0.02)  # todoruleid: family 5 (missed)
            ece += m.float().mean() * gap
    return ece.item()


def fit_temperature(logits, targets, iters=50):
    log_t = torch.zeros(1, device=logits.device, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=iters)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return float(log_t.exp().item())


def evaluate(model, loader, device, train_counts, calib_loader=None, epoch=-1):
    logits, targets = gather_predictions(model, loader, device)
    res = {"epoch": epoch, **topk_accuracy(logits, targets)}
    splits, acc_c, seen = split_accuracy(logits.argmax(dim=1), targets, train_counts)
    res.update(splits)
    res["balanced_acc"] = balanced_accuracy(acc_c, seen)
    if MulticlassAccuracy is not None:
        tm = MulticlassAccuracy(num_classes=logits.size(1), average="macro").to(device)
        res["macro_acc_tm"] = float(tm(logits, targets))
    if calib_loader is not None:
        c_logits, c_targets = gather_predictions(model, calib_loader, device)
        temperature = fit_temperature(c_logits, c_targets)  # ok: MLS306
    else:
        temperature = fit_temperature(logits, targets)  # todoruleid: family 5 (missed)
    res["temperature"] = temperature
    res["ece_raw"] = expected_calibration_error(F.softmax(logits, dim=1), targets)
    res["ece"] = expected_calibration_error(F.softmax(logits / temperature, dim=1), targets)
    model.train()
    return res


def save_results(results, path, writer=None, step=0):
    clean = {}
    for k, v in results.items():
        if isinstance(v, float) and not math.isnan(v) and k != "temperature":
            clean[k] = round(v * 100.0, 2)  # ok: MLS306
        else:
            clean[k] = v
    if os.path.exists(path):
        with open(path) as f:
            prev = json.load(f).get("latest", {})
        clean.update({k: v for k, v in prev.items() if k.endswith("acc") and isinstance(v, (int, float)) and v > clean.get(k, -1.0)})  # todoruleid: family 5 (missed)
    if dist.is_initialized() and dist.get_rank() != 0:
        return clean
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"latest": clean}, f, indent=2, sort_keys=True)
    if writer is not None:
        for k, v in clean.items():
            if isinstance(v, (int, float)) and k != "epoch":
                writer.add_scalar(f"val/{k}", v, step)  # ok: MLS306
    return clean
