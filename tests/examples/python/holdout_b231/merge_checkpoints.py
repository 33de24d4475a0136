# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""Task-arithmetic merging of several fine-tuned checkpoints that share one base model."""
import argparse
import json
import os

import torch
from safetensors.torch import load_file, save_file


def load_sd(path):
    if path.endswith(".safetensors"):
        return load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def task_vectors(base, finetuned):
    return [{k: ft[k].float() - base[k].float() for k in base if k in ft} for ft in finetuned]


@torch.no_grad()
def merge(base, tvs, lam):
    merged = {k: v.clone().float() for k, v in base.items()}
    for k in merged:
        deltas = [tv[k] for tv in tvs if k in tv]
        if deltas:
            merged[k].add_(lam * torch.stack(deltas).sum(0))  # ok: MLS302, MLS303, MLS304, MLS305
    return merged


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--lam", type=float, default=0.3)
    ap.add_argument("--out", default="merged.safetensors")
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()

    base = load_sd(args.base)
    merged = merge(base, task_vectors(base, [load_sd(p) for p in args.models]), args.lam)

    # re-align normalisation statistics with the reference run, if one was exported
    ref_path = os.environ.get("MERGE_NORM_REF", os.path.splitext(args.base)[0] + ".norm.bin")
    if os.path.exists(ref_path):
        ref = torch.load(ref_path, map_location="cpu")  # ruleid: MLS102
        for k, v in ref.items():
            if k in merged and merged[k].shape == v.shape:
                merged[k].copy_(v)  # todoruleid: family 2 (missed)

    dtype = getattr(torch, args.dtype)
    save_file({k: v.to(dtype).contiguous() for k, v in merged.items()}, args.out,
              metadata={"method": "task_arithmetic", "lambda": str(args.lam)})
    with open(os.path.splitext(args.out)[0] + ".json", "w") as fh:
        json.dump({"base": args.base, "models": args.models, "lambda": args.lam}, fh, indent=2)
    print(f"merged {len(args.models)} models -> {args.out}")


if __name__ == "__main__":
    main()
