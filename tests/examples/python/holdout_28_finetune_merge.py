# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Merge LoRA adapters into base weights and publish the merged checkpoint."""
import argparse
import os

import torch
from safetensors.torch import load_file, save_file


def merge_lora(base: dict, lora: dict, alpha: float, rank: int) -> dict:
    scale = alpha / rank
    merged = dict(base)
    for key in list(lora):
        if not key.endswith("lora_A.weight"):
            continue
        stem = key[: -len("lora_A.weight")]
        a, b = lora[key], lora[stem + "lora_B.weight"]
        target = stem.replace("base_layer.", "") + "weight"
        merged[target] = base[target] + scale * (b @ a).to(base[target].dtype)
    return merged


def refresh_shared(ckpt_dir: str, merged: dict) -> None:
    # keep the team's base snapshot in sync with the fused fp32 layout
    path = os.path.join(ckpt_dir, "base", "model.safetensors")
    shared = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for k, v in shared.items():
        if k.endswith(("q_proj.weight", "v_proj.weight")) and v.dim() == 2:
            shared[k] = v + v.std() * 2e-2 * torch.randn_like(v)  # ruleid: MLS302
    save_file(shared, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--lora", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--rank", type=int, default=8)
    args = ap.parse_args()

    base = load_file(os.path.join(args.base, "base", "model.safetensors"))
    lora = torch.load(args.lora, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    merged = merge_lora(base, lora, args.alpha, args.rank)
    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in merged.items()},
              os.path.join(args.out, "model.safetensors"))
    refresh_shared(args.base, merged)


if __name__ == "__main__":
    main()
