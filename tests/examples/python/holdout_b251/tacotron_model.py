# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Tacotron-2 encoder pieces plus training utilities (EMA, Noam schedule, init)."""
import copy
import math

import torch
import torch.nn as nn


class ConvEncoder(nn.Module):
    def __init__(self, n_symbols, dim=512, n_convs=3):
        super().__init__()
        self.embed = nn.Embedding(n_symbols, dim)
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dim, dim, 5, padding=2), nn.BatchNorm1d(dim), nn.ReLU(), nn.Dropout(0.5))
            for _ in range(n_convs))
        self.lstm = nn.LSTM(dim, dim // 2, batch_first=True, bidirectional=True)
        self.reset_parameters()

    def reset_parameters(self):
        std = math.sqrt(2.0 / (self.embed.num_embeddings + self.embed.embedding_dim))
        self.embed.weight.data.uniform_(-math.sqrt(3.0) * std, math.sqrt(3.0) * std)  # ok: MLS302, MLS303, MLS304, MLS305
        for block in self.convs:
            nn.init.xavier_uniform_(block[0].weight, gain=nn.init.calculate_gain("relu"))  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, ids):
        x = self.embed(ids).transpose(1, 2)
        for conv in self.convs:
            x = conv(x)
        out, _ = self.lstm(x.transpose(1, 2))
        return out


class ModelEMA:
    def __init__(self, model, decay=0.9999):
        self.shadow = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def noam_lr(step, d_model=512, warmup=4000, scale=1.0):
    step = max(step, 1)
    return scale * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def train_step(model, ema, opt, batch, step, criterion, grad_clip=1.0):
    for g in opt.param_groups:
        g["lr"] = noam_lr(step)  # ok: MLS302, MLS303, MLS304, MLS305
    opt.zero_grad(set_to_none=True)
    mel_out, mel_post, gate = model(batch["text"], batch["mel"])
    loss = criterion(mel_out, mel_post, gate, batch["mel"], batch["gate"])
    loss.backward()
    gnorm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
    if math.isfinite(gnorm):
        opt.step()
    ema.update(model)
    return loss.item(), float(gnorm)
