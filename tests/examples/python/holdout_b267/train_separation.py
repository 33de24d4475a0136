# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Training loop for the spectrogram U-Net separator (MUSDB18-style stems).

Linear warmup then inverse-sqrt decay set per step, an EMA copy of the
weights for evaluation, and TensorBoard logging from rank 0 only.
"""
import copy
import random

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

N_FFT, HOP = 2048, 512


def lr_at(step, base_lr=1e-3, warmup=4000):
    step = max(step, 1)
    return base_lr * min(step / warmup, (warmup / step) ** 0.5)


def random_gain(mix, stems):
    g = 10 ** (random.uniform(-6.0, 3.0) / 20)  # ok: MLS309
    return mix * g, stems * g


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def magnitude(wav):
    win = torch.hann_window(N_FFT, device=wav.device)
    return torch.stft(wav, N_FFT, HOP, window=win, return_complex=True).abs().unsqueeze(1)


def train(model, loader, steps=300_000, log_every=100):
    rank = dist.get_rank() if dist.is_initialized() else 0
    writer = SummaryWriter("runs/unet_sep") if rank == 0 else None  # ok: MLS306
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=lr_at(0))
    step = 0
    while step < steps:
        for mix, vocals in loader:
            mix, vocals = random_gain(mix, vocals)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)  # ok: MLS302, MLS303, MLS304, MLS305
            est = model(magnitude(mix))
            loss = (est - magnitude(vocals)).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema_update(ema, model)
            step += 1
            if writer is not None and step % log_every == 0:
                writer.add_scalar("train/l1", loss.item(), step)  # ok: MLS306
                writer.add_scalar("train/lr", opt.param_groups[0]["lr"], step)
            if step >= steps:
                break
    return ema
