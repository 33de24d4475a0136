# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""Batch augmentations for BirdCLEF-style multi-label tagging on log-mel spectrograms."""
import torch
import torch.nn as nn


class SpecAugment(nn.Module):
    def __init__(self, freq_mask=16, time_mask=48, n_freq=2, n_time=2):
        super().__init__()
        self.freq_mask, self.time_mask = freq_mask, time_mask
        self.n_freq, self.n_time = n_freq, n_time

    def forward(self, x):  # x: (B, 1, n_mels, T)
        if not self.training:
            return x
        x = x.clone()
        _, _, n_mels, n_frames = x.shape
        for b in range(x.size(0)):
            for _ in range(self.n_freq):
                f = int(torch.randint(0, self.freq_mask + 1, ()))
                f0 = int(torch.randint(0, max(1, n_mels - f), ()))
                x[b, :, f0:f0 + f, :] = 0.0  # ok: MLS309
            for _ in range(self.n_time):
                t = int(torch.randint(0, self.time_mask + 1, ()))
                t0 = int(torch.randint(0, max(1, n_frames - t), ()))
                x[b, :, :, t0:t0 + t] = 0.0
        return x


class MixUp:
    """Waveform-free mixup on spectrograms; targets are merged as a label union."""

    def __init__(self, alpha=0.5, p=0.6):
        self.beta = torch.distributions.Beta(alpha, alpha)
        self.p = p

    def __call__(self, x, y):
        if torch.rand(()) > self.p:
            return x, y
        lam = float(self.beta.sample())
        lam = max(lam, 1.0 - lam)
        x = lam * x + (1.0 - lam) * x.flip(0)
        y = torch.clamp(y + y.flip(-1), max=1.0)  # ruleid: MLS309
        return x, y


def train_step(model, batch, optimizer, spec_aug, mixup, scaler, device):
    model.train()
    spec_aug.train()
    mel, target = batch["mel"].to(device), batch["target"].to(device)
    mel = spec_aug(mel)
    mel, target = mixup(mel, target)
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        logits = model(mel)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()
