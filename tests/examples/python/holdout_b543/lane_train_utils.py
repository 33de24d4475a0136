# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""Training-loop helpers for the row-anchor lane detector."""
import copy
import logging

import torch

log = logging.getLogger(__name__)


class ModelEMA:
    def __init__(self, model, decay=0.9998):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(self.decay).add_(msd[k].detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def scale_lr_for_accumulation(optimizer, accum_steps):
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * accum_steps  # todoruleid: family 2 (missed)


def train_one_epoch(model, loader, criterion, optimizer, scheduler, ema, epoch,
                    accum_steps=2, device="cuda", log_every=50):
    model.train()
    optimizer.zero_grad(set_to_none=True)
    running = 0.0
    for it, batch in enumerate(loader):
        imgs = batch["image"].to(device, non_blocking=True)
        cls_t = batch["cls_label"].to(device)
        seg_t = batch["seg_label"].to(device)
        out = model(imgs)
        loss = criterion(out["cls"], cls_t) + 0.3 * criterion.seg(out["seg"], seg_t)
        (loss / accum_steps).backward()
        if (it + 1) % accum_steps == 0:
            scale_lr_for_accumulation(optimizer, accum_steps)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            ema.update(model)
        running += loss.item()
        if it % log_every == 0:
            log.info("ep %d it %d loss %.4f lr %.2e", epoch, it, running / (it + 1),
                     optimizer.param_groups[0]["lr"])
    return running / max(1, len(loader))
