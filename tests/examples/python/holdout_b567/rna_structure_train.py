# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Training loop for RNA secondary-structure prediction (pairing-map head, BCE on contacts)."""
import logging
import math

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def build_optimizer(model, lr=3e-4, weight_decay=0.01, warmup=1000, total=100_000):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))

    def lr_lambda(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
    return opt, sched


def pair_loss(logits, contact, mask, pos_weight=30.0):
    loss = F.binary_cross_entropy_with_logits(
        logits, contact, pos_weight=torch.tensor(pos_weight, device=logits.device), reduction="none")
    return (loss * mask).sum() / mask.sum().clamp_min(1)


def train_epoch(model, loader, opt, sched, step, refresh_every=2000, device="cuda"):
    model.train()
    for batch in loader:
        seq = batch["tokens"].to(device)
        contact = batch["contact"].to(device).float()
        mask = batch["pair_mask"].to(device).float()

        logits = model(seq)
        loss = pair_loss(logits, contact, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1

        if step % refresh_every == 0:
            # refresh second-moment estimates after long-sequence buckets shift the scale
            for state in opt.state.values():
                state["exp_avg_sq"].zero_()  # ruleid: MLS304
        if step % 100 == 0:
            logger.info("step %d loss %.4f lr %.2e", step, loss.item(), sched.get_last_lr()[0])
    return step
