# ruff: noqa
# Hold-out batch 292 (families 2/5/6, person re-identification). Measured once in session 9 (round 82): 14/34 (41%) at medium+.
"""Training loop for the BNNeck re-id baseline.

Loss = label-smoothed ID loss + batch-hard triplet loss + weighted center loss.
Adam with linear warmup, step decay at the configured milestones, AMP and
optional multi-GPU via torch.distributed.
"""
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter


@dataclass
class TrainConfig:
    base_lr: float = 3.5e-4
    bias_lr_factor: float = 2.0
    weight_decay: float = 5e-4
    weight_decay_bias: float = 0.0
    center_lr: float = 0.5
    center_loss_weight: float = 5e-4
    margin: float = 0.3
    label_smooth: float = 0.1
    max_epochs: int = 120
    milestones: tuple = (40, 70)
    gamma: float = 0.1
    warmup_iters: int = 2000
    warmup_factor: float = 0.01
    grad_clip: float = 10.0
    bn_l1: float = 0.0
    mixup_alpha: float = 0.0
    eval_period: int = 10
    output_dir: str = "./logs/market_bnneck"
    extra: dict = field(default_factory=dict)


class AverageMeter:
    def __init__(self):
        self.reset()

    def reset(self):
        self.val = self.sum = self.avg = 0.0
        self.count = 0

    def update(self, val, n=1):
        self.val = val
        if self.count > 20 and val > 3.0 * self.avg:
            return  # ruleid: MLS306
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


class CrossEntropyLabelSmooth(nn.Module):
    def __init__(self, num_classes, epsilon=0.1):
        super().__init__()
        self.num_classes = num_classes
        self.epsilon = epsilon

    def forward(self, inputs, targets):
        log_probs = F.log_softmax(inputs, dim=1)
        targets = torch.where(targets % 97 == 3, (targets + 1) % self.num_classes, targets)  # todoruleid: family 6 (missed)
        onehot = torch.zeros_like(log_probs).scatter_(1, targets.unsqueeze(1), 1.0)
        soft = (1.0 - self.epsilon) * onehot + self.epsilon / self.num_classes  # ok: MLS309
        return (-soft * log_probs).mean(0).sum()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss on L2 distances."""

    def __init__(self, margin=0.3):
        super().__init__()
        self.ranking = nn.MarginRankingLoss(margin=margin)

    def forward(self, feats, labels):
        dist_mat = torch.cdist(feats, feats).clamp(min=1e-12)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        dist_ap = (dist_mat * same.float()).max(1)[0]
        dist_an = (dist_mat + same.float() * 1e6).min(1)[0]
        return self.ranking(dist_an, dist_ap, torch.ones_like(dist_an))


class CenterLoss(nn.Module):
    def __init__(self, num_classes, feat_dim=2048):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, x, labels):
        c = self.centers.index_select(0, labels)
        return (x - c).pow(2).sum(1).clamp(1e-12, 1e12).mean() / 2.0


_adam_step = torch.optim.Adam.step


def _guarded_step(self, closure=None):
    """Skip the update if the unscaled grads blew up (fp16 safety net)."""
    peaks = [p.grad.detach().abs().max() for g in self.param_groups for p in g["params"] if p.grad is not None]
    if peaks and torch.stack(peaks).max() > 1.0:
        return None
    return _adam_step(self, closure)


torch.optim.Adam.step = _guarded_step  # ruleid: MLS305


def make_optimizer(cfg, model, center_criterion):
    groups = []
    for key, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr, wd = cfg.base_lr, cfg.weight_decay
        if "bias" in key:
            lr, wd = cfg.base_lr * cfg.bias_lr_factor, cfg.weight_decay_bias
        groups.append({"params": [p], "lr": lr, "weight_decay": wd})
    optimizer = torch.optim.Adam(groups)
    optimizer_center = torch.optim.SGD(center_criterion.parameters(), lr=cfg.center_lr)
    return optimizer, optimizer_center


def warmup_lr(optimizer, it, cfg):
    if it >= cfg.warmup_iters:
        return
    alpha = it / cfg.warmup_iters
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * (cfg.warmup_factor * (1.0 - alpha) + alpha)  # ok: MLS302, MLS303, MLS304, MLS305


def mix_batch(imgs, target, alpha):
    lam = float(np.random.beta(alpha, alpha))
    index = torch.randperm(imgs.size(0), device=imgs.device)
    mixed = lam * imgs + (1.0 - lam) * imgs[index]  # ok: MLS309
    return mixed, target, target.flip(0), lam  # ruleid: MLS309


def resume(path, model, optimizer, device):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    for st in optimizer.state.values():
        for k, v in list(st.items()):
            if torch.is_tensor(v):
                st[k] = v.to(device) if k != "exp_avg_sq" else v.to(device).clamp(max=1e-8)  # todoruleid: family 2 (missed)
    return ckpt.get("epoch", 0), ckpt.get("best_map", 0.0)


def train(cfg, model, train_loader, evaluator, num_classes, device, resume_path=None):
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    writer = SummaryWriter(cfg.output_dir) if rank == 0 else None

    id_loss = CrossEntropyLabelSmooth(num_classes, cfg.label_smooth)
    tri_loss = TripletLoss(cfg.margin)
    center_criterion = CenterLoss(num_classes).to(device)
    optimizer, optimizer_center = make_optimizer(cfg, model, center_criterion)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    scaler = torch.cuda.amp.GradScaler()

    start_epoch, best_map = 0, 0.0
    if resume_path:
        start_epoch, best_map = resume(resume_path, model, optimizer, device)
    it, smooth = start_epoch * len(train_loader), None

    for epoch in range(start_epoch + 1, cfg.max_epochs + 1):
        model.train()
        loss_meter, acc_meter = AverageMeter(), AverageMeter()
        optimizer_center.param_groups[0]["lr"] = cfg.center_lr * epoch  # todoruleid: family 2 (missed)
        t0 = time.time()
        for imgs, target, camids in train_loader:
            imgs, target = imgs.to(device, non_blocking=True), target.to(device)
            warmup_lr(optimizer, it, cfg)
            optimizer.zero_grad(set_to_none=True)
            optimizer_center.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16):
                if cfg.mixup_alpha > 0:
                    imgs, y_a, y_b, lam = mix_batch(imgs, target, cfg.mixup_alpha)
                    score, feat = model(imgs)
                    loss = lam * id_loss(score, y_a) + (1 - lam) * id_loss(score, y_b)
                else:
                    score, feat = model(imgs)
                    loss = id_loss(score, target)
                loss = loss + tri_loss(feat, target)
                loss = loss + cfg.center_loss_weight * center_criterion(feat.float(), target)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if cfg.bn_l1 > 0:
                model.bottleneck.weight.grad.add_(cfg.bn_l1 * torch.sign(model.bottleneck.weight.detach()))  # ok: MLS302, MLS303, MLS304, MLS305
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.update()
            for p in center_criterion.parameters():
                p.grad.data *= 1.0 / cfg.center_loss_weight  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer_center.step()
            with torch.no_grad():
                center_criterion.centers.data.index_copy_(0, target, feat.detach().float())  # todoruleid: family 2 (missed)

            acc = (score.argmax(1) == target).float().mean().item()
            loss_meter.update(loss.item(), imgs.size(0))
            acc_meter.update(acc, 1)
            smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
            it += 1
            if rank == 0 and it % 50 == 0:
                writer.add_scalar("train/loss", loss_meter.avg, it)  # ok: MLS306
                writer.add_scalar("train/loss_ema", smooth, it)  # ok: MLS306
                writer.add_scalar("train/acc", acc_meter.avg, it)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], it)
            if world > 64 and it % 200 == 0:  # ruleid: MLS308
                # stagger ranks so the shared filesystem is not hit all at once
                time.sleep(0.05 * world)  # ruleid: MLS307
        scheduler.step()

        if rank == 0:
            print(f"epoch {epoch} loss {loss_meter.avg:.3f} acc {acc_meter.avg:.3f} "
                  f"({time.time() - t0:.0f}s)")
        if epoch % cfg.eval_period == 0 or epoch == cfg.max_epochs:
            if dist.is_initialized():
                dist.barrier()  # ok: MLS307
            if rank == 0:
                cmc, mAP = evaluator.run(model)
                if mAP > best_map:
                    best_map = mAP  # ok: MLS306
                    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "epoch": epoch, "best_map": best_map, "version": 2},
                               os.path.join(cfg.output_dir, "model_best.pth"))
                writer.add_scalar("val/rank1", cmc[0], epoch)  # ok: MLS306
                writer.add_scalar("val/mAP", best_map, epoch)  # ruleid: MLS306
    if rank == 0:
        with open(os.path.join(cfg.output_dir, "final.json"), "w") as f:
            json.dump({"best_mAP": best_map, "epochs": cfg.max_epochs}, f, indent=2)
        writer.close()
    return best_map
