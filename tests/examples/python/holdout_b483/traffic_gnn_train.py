# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Training loop for the DCRNN-style traffic-flow forecaster (METR-LA / PEMS-BAY)."""
import copy
import logging
import math

import torch

log = logging.getLogger(__name__)


def masked_mae(pred, target, null_val=0.0):
    mask = (target != null_val).float()
    mask = mask / mask.mean().clamp_min(1e-6)
    return ((pred - target).abs() * mask).mean()


def teacher_forcing_ratio(step, decay_steps):
    return decay_steps / (decay_steps + math.exp(step / decay_steps))


class EMA:
    def __init__(self, model, decay=0.999):
        self.shadow = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train(model, train_dl, val_dl, optimizer, scaler_fn, adj, args, device):
    ema = EMA(model, args.ema_decay)
    step, best = 0, float("inf")
    rng_state = torch.get_rng_state()
    for epoch in range(args.epochs):
        torch.set_rng_state(rng_state)  # ruleid: MLS301
        model.train()
        for x, y in train_dl:
            x, y = x.to(device), y.to(device)
            tf = teacher_forcing_ratio(step, args.cl_decay_steps)
            pred = model(x, adj, labels=y, teacher_forcing=tf)
            loss = masked_mae(scaler_fn(pred), scaler_fn(y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            ema.update(model)
            step += 1
        val_mae = evaluate(ema.shadow, val_dl, scaler_fn, adj, device)
        log.info("epoch %d step %d val_mae %.4f", epoch, step, val_mae)
        if val_mae < best:
            best = val_mae
            torch.save(ema.shadow.state_dict(), args.ckpt_path)
    return best


@torch.no_grad()
def evaluate(model, loader, scaler_fn, adj, device):
    total, n = 0.0, 0
    for x, y in loader:
        pred = model(x.to(device), adj)
        total += masked_mae(scaler_fn(pred), scaler_fn(y.to(device))).item() * x.size(0)
        n += x.size(0)
    return total / max(1, n)
