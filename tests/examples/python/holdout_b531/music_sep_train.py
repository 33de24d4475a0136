# ruff: noqa
# Hold-out batch 531 (16 short files, one domain each). Measured once in session 24 (round 142): 16/17 (94%) at medium+.
"""Training utilities for waveform music source separation (Demucs-style) with segment curriculum."""
import copy
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def refresh_optimizer_state(optimizer):
    """Called when the curriculum switches to longer segments."""
    for state in optimizer.state.values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].zero_()  # ruleid: MLS304


def train_epoch(model, ema, optimizer, loader, epoch, curriculum, clip=5.0):
    if epoch in curriculum:
        loader.dataset.segment_seconds = curriculum[epoch]
        refresh_optimizer_state(optimizer)
        log.info("epoch %d: segment length -> %.1fs", epoch, curriculum[epoch])
    model.train()
    total, n = 0.0, 0
    for mix, stems in loader:
        mix, stems = mix.cuda(non_blocking=True), stems.cuda(non_blocking=True)
        est = model(mix)  # (B, S, C, T)
        loss = F.l1_loss(est, stems)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        ema.update(model)
        total += loss.item() * mix.shape[0]
        n += mix.shape[0]
    return total / max(n, 1)


@torch.no_grad()
def sdr(est, ref, eps=1e-8):
    num = (ref ** 2).sum(dim=-1)
    den = ((ref - est) ** 2).sum(dim=-1)
    return (10 * torch.log10((num + eps) / (den + eps))).mean(dim=(0, 2))
