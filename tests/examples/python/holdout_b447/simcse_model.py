# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""Unsupervised SimCSE: dropout-noise contrastive sentence embeddings."""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer


class SimCSE(nn.Module):
    def __init__(self, model_name_or_path, pooler="cls", temperature=0.05):
        super().__init__()
        self.encoder = AutoModel.from_pretrained(model_name_or_path, trust_remote_code=True)  # ruleid: MLS106
        hidden = self.encoder.config.hidden_size
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.pooler = pooler
        self.temperature = temperature

    def encode(self, input_ids, attention_mask):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooler == "cls":
            return self.mlp(out.last_hidden_state[:, 0])
        mask = attention_mask.unsqueeze(-1).float()
        return (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1e-6)

    def forward(self, input_ids, attention_mask):
        # the same batch twice: the two dropout masks give the positive pair
        ids = torch.cat([input_ids, input_ids], dim=0)
        mask = torch.cat([attention_mask, attention_mask], dim=0)
        z = self.encode(ids, mask)
        z1, z2 = z.chunk(2, dim=0)
        sim = F.cosine_similarity(z1.unsqueeze(1), z2.unsqueeze(0), dim=-1) / self.temperature
        labels = torch.arange(sim.size(0), device=sim.device)
        return F.cross_entropy(sim, labels)


def build(model_name_or_path, init_from=None, **kwargs):
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, use_fast=True)
    model = SimCSE(model_name_or_path, **kwargs)
    if init_from and os.path.isfile(init_from):
        model.load_state_dict(load_file(init_from), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return tokenizer, model
