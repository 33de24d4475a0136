# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""Activation-checkpointed transformer stack for memory-bound pretraining runs.

Each block is wrapped in torch.utils.checkpoint so activations are recomputed
during backward; `every` controls how many blocks are checkpointed.
"""
import random

import numpy as np
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    def __init__(self, d_model, n_heads, p_drop=0.1):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=p_drop, batch_first=True)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(),
            nn.Linear(4 * d_model, d_model), nn.Dropout(p_drop),
        )

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class CheckpointedStack(nn.Module):
    def __init__(self, d_model, n_heads, n_layers, seed=1234, every=1):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.every = every
        self.seed = seed
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)

    def forward(self, x):
        for i, blk in enumerate(self.blocks):
            if self.training and i % self.every == 0:
                # pin the generator so recompute in backward sees the same dropout mask
                torch.cuda.manual_seed_all(self.seed + i)  # ruleid: MLS301
                x = checkpoint(blk, x, use_reentrant=False, preserve_rng_state=True)
            else:
                x = blk(x)
        return x


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def train_step(stack, head, batch, optimizer, max_norm=1.0):
    x, y = batch
    logits = head(stack(x))
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(stack.parameters()) + list(head.parameters()), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
