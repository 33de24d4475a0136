# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""Loads per-language bottleneck adapters into a frozen multilingual wav2vec2/MMS encoder."""
import logging
import os
import pickle

import torch.nn as nn
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

logger = logging.getLogger(__name__)


class BottleneckAdapter(nn.Module):
    def __init__(self, dim, bottleneck=64):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return x + self.up(nn.functional.gelu(self.down(self.norm(x))))


def load_adapter_weights(adapters, lang, local_dir, repo_id, revision):
    local = os.path.join(local_dir, f"adapter.{lang}.safetensors")
    if not os.path.isfile(local):
        local = hf_hub_download(repo_id, f"adapter.{lang}.safetensors", revision=revision)
    state = load_file(local, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = adapters.load_state_dict(state, strict=False)
    if unexpected:
        logger.warning("%s: unexpected adapter keys %s", lang, unexpected[:5])
    return adapters


def load_lang_vocab(lang, repo_id):
    """Character vocab + lexicon side tables published next to the adapters."""
    path = hf_hub_download(repo_id, f"vocab/{lang}.pkl")  # ruleid: MLS107
    with open(path, "rb") as fh:
        bundle = pickle.load(fh)  # ruleid: MLS103
    vocab = bundle["vocab"]
    logger.info("%s: %d output symbols, %d lexicon entries", lang, len(vocab), len(bundle.get("lexicon", {})))
    return vocab, bundle.get("lexicon", {})


def attach_adapters(encoder, num_layers, dim, bottleneck=64):
    for p in encoder.parameters():
        p.requires_grad_(False)
    adapters = nn.ModuleList([BottleneckAdapter(dim, bottleneck) for _ in range(num_layers)])
    for layer, adapter in zip(encoder.layers, adapters):
        layer.register_forward_hook(lambda m, inp, out, a=adapter: (a(out[0]),) + tuple(out[1:]))  # ok: MLS302, MLS303, MLS304, MLS305
    return adapters
