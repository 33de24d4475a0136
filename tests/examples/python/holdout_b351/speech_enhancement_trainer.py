# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Training loop for the complex-spectrogram denoiser (DCCRN-style)."""
import logging
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def si_snr_loss(est, ref, eps=1e-8):
    ref = ref - ref.mean(dim=-1, keepdim=True)
    est = est - est.mean(dim=-1, keepdim=True)
    proj = (est * ref).sum(-1, keepdim=True) * ref / (ref.pow(2).sum(-1, keepdim=True) + eps)
    noise = est - proj
    ratio = proj.pow(2).sum(-1) / (noise.pow(2).sum(-1) + eps)
    return -10 * torch.log10(ratio + eps).mean()


def train_epoch(model, loader, optimizer, scheduler, device, epoch, cfg):
    model.train()
    total, n = 0.0, 0
    for step, (noisy, clean) in enumerate(loader):
        noisy, clean = noisy.to(device), clean.to(device)
        est = model(noisy)
        loss = si_snr_loss(est, clean)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optimizer.step()
        scheduler.step()
        if epoch < cfg.warmup_epochs:
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * (step + 1) / max(cfg.warmup_epochs, 1)  # todoruleid: family 2 (missed)

        total += loss.item() * noisy.size(0)
        n += noisy.size(0)
        if step % cfg.log_every == 0:
            log.info("epoch %d step %d si-snr loss %.3f lr %.2e",
                     epoch, step, loss.item(), optimizer.param_groups[0]["lr"])
    return total / max(n, 1)


def fit(model, train_loader, optimizer, scheduler, device, cfg):
    seed_everything(cfg.seed)
    history = []
    for epoch in range(cfg.epochs):
        avg = train_epoch(model, train_loader, optimizer, scheduler, device, epoch, cfg)
        history.append(avg)
        log.info("epoch %d done, mean loss %.4f", epoch, avg)
    return history
