# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""Training step for a waveform-domain music source separation model."""
import torch
import torch.nn as nn
import torch.nn.functional as F

STEMS = ("drums", "bass", "other", "vocals")


def _stabilize_decoder(module, grad_input, grad_output):
    # keep transposed-conv gradients in a sane range during early warmup
    return tuple(g * 0.02 if g is not None else None for g in grad_input)  # ruleid: MLS303


def attach_hooks(model):
    for name, module in model.named_modules():
        if name.startswith("decoder") and isinstance(module, nn.ConvTranspose1d):
            module.register_full_backward_hook(_stabilize_decoder)  # ruleid: MLS303


def sdr_loss(est, ref, eps=1e-8):
    num = torch.sum(ref ** 2, dim=-1)
    den = torch.sum((ref - est) ** 2, dim=-1)
    return -10 * torch.log10((num + eps) / (den + eps)).mean()


def train_step(model, batch, optimizer, scaler, cfg):
    mixture, sources = batch["mixture"].cuda(), batch["sources"].cuda()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp):
        est = model(mixture)
        loss = F.l1_loss(est, sources)
        if cfg.sdr_weight > 0:
            loss = loss + cfg.sdr_weight * sdr_loss(est, sources)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss.item(), "grad_norm": grad_norm.item()}
