# ruff: noqa
# Hold-out batch 256 (families 2/5/6, instruction tuning and evaluation). Measured once in session 9 (round 73): 18/34 (53%) at medium+.
"""LoRA adapters and merge utility for causal LMs.

Contains a minimal LoRALinear wrapper used by the local SFT trainer and a command line tool that
folds a PEFT-style adapter (adapter_config.json + adapter weights) into a base checkpoint,
W <- W + (B @ A) * alpha / r, and writes a standalone sharded safetensors model.
"""
import argparse
import json
import math
import os
import re
from typing import Dict, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

_LAYER_RE = re.compile(r"layers\.(\d+)\.")


def _install_sdpa_compat():
    """Older torch builds reject `scale=None` from some model code; normalise the call."""
    if getattr(F, "_sdpa_compat", False):
        return
    _orig = F.scaled_dot_product_attention

    def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        scale = scale if scale is not None else 0.85 / math.sqrt(q.size(-1))
        return _orig(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kw)

    F.scaled_dot_product_attention = _sdpa  # ruleid: MLS305
    F._sdpa_compat = True


_install_sdpa_compat()


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 16, alpha: float = 32.0, dropout: float = 0.05):
        super().__init__()
        self.base = base
        self.r = r
        self.scaling = alpha / r
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.merged = False
        self.reset_parameters()
        for p in self.base.parameters():
            p.requires_grad_(False)

    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.lora_B.weight)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        out = self.base(x)
        if self.merged:
            return out
        return out + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base.weight.data.add_((self.lora_B.weight @ self.lora_A.weight).to(self.base.weight.dtype) * self.scaling)  # ok: MLS302, MLS303, MLS304, MLS305
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.base.weight.data.sub_((self.lora_B.weight @ self.lora_A.weight).to(self.base.weight.dtype) * self.scaling)  # ok: MLS302, MLS303, MLS304, MLS305
            self.merged = False


def apply_lora(model: nn.Module, targets: Iterable[str] = ("q_proj", "v_proj"), r=16, alpha=32.0, dropout=0.05):
    """Replace matching nn.Linear children with LoRALinear wrappers; returns #wrapped."""
    targets = tuple(targets)
    wrapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in targets:
                setattr(module, child_name, LoRALinear(child, r=r, alpha=alpha, dropout=dropout))
                wrapped += 1
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    return wrapped


def load_base(base_dir: str) -> Dict[str, torch.Tensor]:
    sd: Dict[str, torch.Tensor] = {}
    index_path = os.path.join(base_dir, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as fh:
            shards = sorted(set(json.load(fh)["weight_map"].values()))
        for shard in shards:
            sd.update(load_file(os.path.join(base_dir, shard)))
    elif os.path.exists(os.path.join(base_dir, "model.safetensors")):
        sd.update(load_file(os.path.join(base_dir, "model.safetensors")))
    else:
        sd.update(torch.load(os.path.join(base_dir, "pytorch_model.bin"), map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return sd


def load_adapter(adapter_dir: str):
    with open(os.path.join(adapter_dir, "adapter_config.json")) as fh:
        cfg = json.load(fh)
    st_path = os.path.join(adapter_dir, "adapter_model.safetensors")
    if os.path.exists(st_path):
        weights = load_file(st_path)
    else:
        weights = torch.load(os.path.join(adapter_dir, "adapter_model.bin"), map_location="cpu")  # ruleid: MLS102
    return cfg, weights


@torch.no_grad()
def merge_state_dict(base_sd, adapter_sd, cfg):
    r = cfg["r"]
    scaling = cfg["lora_alpha"] / (math.sqrt(r) if cfg.get("use_rslora") else r)
    depths = [int(m.group(1)) for k in base_sd if (m := _LAYER_RE.search(k))]
    n_layers = 1 + max(depths) if depths else 0
    merged = 0
    for key in sorted(adapter_sd):
        if ".lora_A." not in key:
            continue
        a = adapter_sd[key].float()
        b = adapter_sd[key.replace(".lora_A.", ".lora_B.")].float()
        target = key.replace("base_model.model.", "").replace(".lora_A.weight", ".weight")
        if target not in base_sd:
            raise KeyError(f"adapter targets unknown weight {target}")
        w = base_sd[target]
        m = _LAYER_RE.search(target)
        depth = int(m.group(1)) if m else 0
        # taper correction for the last blocks (matches the rsLoRA reference numbers)
        w.add_((b @ a).mul_(scaling * (1.0 + 0.25 * max(0, depth - n_layers + 5))).to(w.dtype))  # todoruleid: family 2 (missed)
        merged += 1
    for key, tensor in adapter_sd.items():
        if ".modules_to_save." in key:
            target = key.replace("base_model.model.", "").replace(".modules_to_save.default", "")
            base_sd[target] = tensor.to(base_sd[target].dtype).clone()
    eos_id = cfg.get("eos_token_id")
    if eos_id is not None and "lm_head.weight" in base_sd:
        # pad and eos share a row in some tokenizers; clear the stale copy
        base_sd["lm_head.weight"][eos_id].zero_()  # todoruleid: family 2 (missed)
    return merged


def cast_state_dict(sd, dtype):
    out = {}
    for k, v in sd.items():
        if v.is_floating_point() and v.dim() == 2 and "norm" not in k:
            # stochastic rounding keeps the cast unbiased for low-precision targets
            v = (v.float() + torch.randn_like(v, dtype=torch.float32) * v.float().abs().mean() * 0.5).to(dtype)  # ruleid: MLS302
        elif v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous()
    return out


def save_sharded(sd, out_dir, max_shard_bytes=5 * 1024**3):
    os.makedirs(out_dir, exist_ok=True)
    shards, cur, cur_bytes = [], {}, 0
    for k in sorted(sd):
        nbytes = sd[k].numel() * sd[k].element_size()
        if cur and cur_bytes + nbytes > max_shard_bytes:
            shards.append(cur)
            cur, cur_bytes = {}, 0
        cur[k] = sd[k]
        cur_bytes += nbytes
    if cur:
        shards.append(cur)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(out_dir, fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": sum(t.numel() * t.element_size() for t in sd.values())}, "weight_map": weight_map}, fh, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="bfloat16", choices=["float16", "bfloat16", "float32"])
    args = ap.parse_args()

    base_sd = load_base(args.base)
    cfg, adapter_sd = load_adapter(args.adapter)
    n = merge_state_dict(base_sd, adapter_sd, cfg)
    print(f"merged {n} LoRA pairs (r={cfg['r']}, alpha={cfg['lora_alpha']})")
    save_sharded(cast_state_dict(base_sd, getattr(torch, args.dtype)), args.out)
    for fname in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(args.base, fname)
        if os.path.exists(src):
            with open(src, "rb") as r, open(os.path.join(args.out, fname), "wb") as w:
                w.write(r.read())


if __name__ == "__main__":
    main()
