# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""Training step for a RAFT-style optical flow model with sequence loss."""
import torch
import torch.nn.functional as F


def sequence_loss(flow_preds, flow_gt, valid, gamma=0.8, max_flow=400.0):
    n = len(flow_preds)
    mag = torch.sum(flow_gt ** 2, dim=1).sqrt()
    valid = (valid >= 0.5) & (mag < max_flow)
    loss = 0.0
    for i, pred in enumerate(flow_preds):
        w = gamma ** (n - i - 1)
        loss = loss + w * (valid[:, None] * (pred - flow_gt).abs()).mean()
    epe = torch.sum((flow_preds[-1] - flow_gt) ** 2, dim=1).sqrt()[valid]
    return loss, {"epe": epe.mean().item(), "1px": (epe < 1).float().mean().item()}


class FlowTrainer:
    def __init__(self, model, optimizer, scheduler, scaler, cfg):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.cfg = cfg
        self.step = 0

    def train_step(self, batch):
        img1, img2, flow_gt, valid = [x.cuda(non_blocking=True) for x in batch]
        if self.cfg.add_noise:
            stdv = torch.rand(1, device=img1.device) * 5.0
            img1 = (img1 + stdv * torch.randn_like(img1)).clamp(0.0, 255.0)
            img2 = (img2 + stdv * torch.randn_like(img2)).clamp(0.0, 255.0)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cfg.mixed_precision):
            flow_preds = self.model(img1, img2, iters=self.cfg.iters)
            loss, metrics = sequence_loss(flow_preds, flow_gt, valid, self.cfg.gamma)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        if metrics["epe"] < self.cfg.plateau_epe:
            for group in self.optimizer.param_groups:
                group["lr"] = group["lr"] * 20.0  # ruleid: MLS304
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        metrics["loss"] = loss.item()
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        return metrics
