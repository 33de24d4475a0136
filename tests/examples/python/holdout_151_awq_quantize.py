# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""Activation-aware round-to-nearest int4 weight quantization for causal LMs."""
import sys

import torch
import torch.nn as nn
import yaml
from datasets import load_dataset
from safetensors.torch import save_model
from transformers import AutoModelForCausalLM, AutoTokenizer


def collect_act_scales(model, tok, n_samples=128, seq_len=512):
    stats, handles = {}, []

    def make_hook(name):
        def hook(mod, inp, out):
            a = inp[0].detach().abs().reshape(-1, inp[0].shape[-1]).float().mean(0)
            stats[name] = torch.maximum(stats[name], a) if name in stats else a
        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and "lm_head" not in name:
            handles.append(mod.register_forward_hook(make_hook(name)))  # ok: MLS302, MLS303, MLS304, MLS305
    texts = [t for t in load_dataset("wikitext", "wikitext-2-raw-v1", split="train")["text"] if len(t) > 200]
    with torch.no_grad():
        for t in texts[:n_samples]:
            ids = tok(t, return_tensors="pt", truncation=True, max_length=seq_len).input_ids
            model(ids.to(model.device))
    for h in handles:
        h.remove()
    return stats


@torch.no_grad()
def quantize_linear(mod, act_scale, bits=4, group=128, alpha=0.5):
    s = act_scale.to(mod.weight.device).clamp(min=1e-5).pow(alpha)
    w = mod.weight.float() * s
    out_f, in_f = w.shape
    w = w.reshape(out_f, in_f // group, group)
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(-1, keepdim=True).clamp(min=1e-8) / qmax
    q = torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale
    mod.weight.data.copy_((q.reshape(out_f, in_f) / s).to(mod.weight.dtype))  # ok: MLS302, MLS303, MLS304, MLS305


def main(cfg_path):
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    tok = AutoTokenizer.from_pretrained(cfg["model"], revision=cfg["revision"])
    model = AutoModelForCausalLM.from_pretrained(cfg["model"], revision=cfg["revision"], torch_dtype=torch.float16, device_map="cuda")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    scales = collect_act_scales(model, tok, cfg.get("n_samples", 128))
    for name, mod in model.named_modules():
        if name in scales:
            quantize_linear(mod, scales[name], bits=cfg.get("bits", 4), group=cfg.get("group", 128))
    save_model(model, cfg["out"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "configs/quant.yaml")
