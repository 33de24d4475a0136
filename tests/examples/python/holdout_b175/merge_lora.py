# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""Merge a trained LoRA adapter into its base model and export safetensors shards."""
import argparse
import json
import os

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def load_adapter(adapter_dir):
    st_path = os.path.join(adapter_dir, "adapter_model.safetensors")
    if os.path.exists(st_path):
        return load_file(st_path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(os.path.join(adapter_dir, "adapter_model.bin"), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


@torch.no_grad()
def merge_into(model, adapter, scaling):
    modules = dict(model.named_modules())
    merged = 0
    for key, lora_a in adapter.items():
        if "lora_A" not in key:
            continue
        lora_b = adapter[key.replace("lora_A", "lora_B")]
        target = key.split(".lora_A")[0].replace("base_model.model.", "", 1)
        layer = modules[target]
        delta = (lora_b.float() @ lora_a.float()) * scaling
        layer.weight.add_(delta.to(layer.weight.dtype))  # ok: MLS302, MLS303, MLS304, MLS305
        merged += 1
    return merged


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    with open(os.path.join(args.adapter, "adapter_config.json")) as fh:
        cfg = json.load(fh)
    scaling = cfg["lora_alpha"] / cfg["r"]
    model = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.bfloat16)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    n = merge_into(model, load_adapter(args.adapter), scaling)
    print(f"merged {n} LoRA pairs (scaling={scaling:.3f})")
    model.save_pretrained(args.out, safe_serialization=True, max_shard_size="5GB")
    AutoTokenizer.from_pretrained(args.base).save_pretrained(args.out)


if __name__ == "__main__":
    main()
