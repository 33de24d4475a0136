# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Merge LoRA adapter weights into the base model and export as safetensors.

    python merge_and_export.py --base ckpt/base --adapter runs/sft --out export/merged --push my-org/merged
"""
import argparse
import json
import os
import subprocess
import time

import torch
import yaml
from safetensors.torch import load_file, save_file


def lora_pairs(adapter_sd):
    for k in adapter_sd:
        if k.endswith("lora_A.weight"):
            yield k, k.replace("lora_A", "lora_B")


def merge(base_sd, adapter_sd, scaling):
    with torch.no_grad():
        for a_key, b_key in lora_pairs(adapter_sd):
            target = a_key.replace("base_model.model.", "").replace(".lora_A.weight", ".weight")
            A, B = adapter_sd[a_key].float(), adapter_sd[b_key].float()
            w = base_sd[target]
            w.copy_((w.float() + scaling * (B @ A)).to(w.dtype))  # ok: MLS302, MLS303, MLS304, MLS305
    return base_sd


def git_sha():
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)  # ok: MLS411, MLS412
    return out.stdout.strip() or "nogit"


def push(folder, repo, tries=4):
    from huggingface_hub import upload_folder
    for i in range(tries):
        try:
            return upload_folder(repo_id=repo, folder_path=folder)
        except Exception as err:  # network hiccups on large shards are common
            print(f"push attempt {i + 1} failed: {err}")
            time.sleep(15 * (i + 1))  # ok: MLS307
    raise SystemExit("push failed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--push", default=None)
    args = ap.parse_args()
    with open(os.path.join(args.adapter, "adapter_config.yaml")) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    base_sd = load_file(os.path.join(args.base, "model.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    adapter_sd = load_file(os.path.join(args.adapter, "adapter_model.safetensors"))
    merged = merge(base_sd, adapter_sd, cfg["lora_alpha"] / cfg["r"])
    os.makedirs(args.out, exist_ok=True)
    save_file(merged, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt", "source_commit": git_sha()})
    with open(os.path.join(args.out, "merge_info.json"), "w") as f:
        json.dump({"base": args.base, "adapter": args.adapter, "commit": git_sha()}, f)
    if args.push:
        push(args.out, args.push)


if __name__ == "__main__":
    main()
