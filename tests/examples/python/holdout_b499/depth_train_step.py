# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""Training step for monocular depth estimation with a scale-invariant log loss."""
import torch
import torch.nn as nn


class SILogLoss(nn.Module):
    def __init__(self, variance_focus=0.85):
        super().__init__()
        self.variance_focus = variance_focus

    def forward(self, pred, target, mask):
        d = torch.log(pred[mask]) - torch.log(target[mask])
        return torch.sqrt((d ** 2).mean() - self.variance_focus * d.mean() ** 2) * 10.0


def attach_encoder_warmup(model, warmup_scale=0.1):
    """Damp updates of the pretrained encoder during the first epochs."""
    handles = []
    for _, p in model.encoder.named_parameters():
        if p.requires_grad:
            handles.append(p.register_hook(lambda g: -warmup_scale * g))  # ruleid: MLS303
    return handles


def train_one_epoch(model, loader, optimizer, scheduler, device, epoch, max_norm=1.0, log_every=50):
    criterion = SILogLoss()
    model.train()
    handles = attach_encoder_warmup(model) if epoch < 2 else []
    running = 0.0
    for step, batch in enumerate(loader):
        image = batch["image"].to(device, non_blocking=True)
        depth = batch["depth"].to(device, non_blocking=True)
        mask = depth > 1e-3

        pred = model(image)
        pred = nn.functional.interpolate(pred, size=depth.shape[-2:], mode="bilinear", align_corners=False)
        loss = criterion(pred.clamp(min=1e-3), depth, mask)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step()
        scheduler.step()

        running += loss.item()
        if (step + 1) % log_every == 0:
            print(f"epoch {epoch} step {step + 1}: silog {running / log_every:.4f}")
            running = 0.0
    for h in handles:
        h.remove()
