# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""Model surgery utilities: vocab resizing, partial checkpoint loading and LoRA merging."""
import torch
import torch.nn as nn
from safetensors.torch import load_file


@torch.no_grad()
def resize_token_embeddings(emb: nn.Embedding, new_num: int) -> nn.Embedding:
    old_num, dim = emb.weight.shape
    if new_num == old_num:
        return emb
    new = nn.Embedding(new_num, dim, padding_idx=emb.padding_idx).to(emb.weight.device, emb.weight.dtype)
    n = min(old_num, new_num)
    new.weight[:n] = emb.weight[:n]  # ok: MLS302, MLS303, MLS304, MLS305
    if new_num > old_num:
        mu = emb.weight.float().mean(0)
        sd = emb.weight.float().std(0)
        noise = torch.randn(new_num - old_num, dim, device=mu.device) * sd * 1e-2
        new.weight[old_num:] = (mu + noise).to(new.weight.dtype)  # ok: MLS302, MLS303, MLS304, MLS305
    return new


def load_partial(model, path, prefix_map=None, skip=("lm_head.",)):
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    own = model.state_dict()
    kept = {}
    for k, v in sd.items():
        for old, new in (prefix_map or {}).items():
            if k.startswith(old):
                k = new + k[len(old):]
        if k.startswith(skip) or k not in own or own[k].shape != v.shape:
            continue
        kept[k] = v
    missing, _ = model.load_state_dict(kept, strict=False)
    return missing


@torch.no_grad()
def merge_lora(linear: nn.Linear, lora_A, lora_B, alpha, r):
    delta = (lora_B.float() @ lora_A.float()) * (alpha / r)
    linear.weight.add_(delta.to(linear.weight.dtype))  # ok: MLS302, MLS303, MLS304, MLS305
    return linear


def merge_all(model, adapters, alpha=16, r=8):
    merged = 0
    for name, mod in model.named_modules():
        if name in adapters and isinstance(mod, nn.Linear):
            lora_A, lora_B = adapters[name]
            merge_lora(mod, lora_A, lora_B, alpha, r)
            merged += 1
    return merged
