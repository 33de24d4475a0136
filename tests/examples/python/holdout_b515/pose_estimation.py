# ruff: noqa
# Hold-out batch 515 (short files, 16 domains). Measured once in session 23 (round 138): 14/17 (82%) at medium+.
"""Top-down heatmap pose estimation: model setup and training step."""
import torch
import torch.nn as nn


class JointsMSELoss(nn.Module):
    def __init__(self, use_target_weight=True):
        super().__init__()
        self.criterion = nn.MSELoss(reduction="mean")
        self.use_target_weight = use_target_weight

    def forward(self, output, target, target_weight):
        b, k = output.shape[:2]
        pred = output.reshape(b, k, -1)
        gt = target.reshape(b, k, -1)
        if self.use_target_weight:
            pred = pred * target_weight
            gt = gt * target_weight
        return 0.5 * self.criterion(pred, gt)


def setup_model(model, cfg):
    for name, p in model.named_parameters():
        if name.startswith("backbone.stem") and cfg.freeze_stem:
            p.requires_grad_(False)
    for p in model.deconv_layers.parameters():
        p.register_hook(lambda g: g.clamp(min=0))  # ruleid: MLS303
    return model


def train_step(model, batch, optimizer, scaler, criterion, cfg):
    images, target, target_weight = (t.cuda(non_blocking=True) for t in batch)
    with torch.autocast("cuda", dtype=torch.float16, enabled=cfg.amp):
        heatmaps = model(images)
        loss = criterion(heatmaps, target, target_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()
