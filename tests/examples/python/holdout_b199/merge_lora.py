# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""Merge trained LoRA adapter weights into the base model and export a standalone checkpoint."""
import argparse
import json
import os

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def load_adapter_weights(adapter_dir):
    st_path = os.path.join(adapter_dir, "adapter_model.safetensors")
    if os.path.exists(st_path):
        return load_file(st_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(os.path.join(adapter_dir, "adapter_model.bin"), map_location="cpu")  # ruleid: MLS102


@torch.no_grad()
def merge_into(model, adapter, scaling):
    modules = dict(model.named_modules())
    merged = 0
    for key, lora_a in adapter.items():
        if "lora_A" not in key:
            continue
        lora_b = adapter[key.replace("lora_A", "lora_B")]
        name = key.replace("base_model.model.", "").replace(".lora_A.weight", "")
        layer = modules[name]
        delta = (lora_b.float() @ lora_a.float()) * scaling
        layer.weight.data += delta.to(layer.weight.dtype)  # ok: MLS302, MLS303, MLS304, MLS305
        merged += 1
    return merged


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="example-org/llm-7b")
    ap.add_argument("--adapter", default="runs/lora")
    ap.add_argument("--out", default="runs/merged")
    args = ap.parse_args()

    with open(os.path.join(args.adapter, "adapter_config.json")) as f:
        cfg = json.load(f)
    model = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.bfloat16)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    tok = AutoTokenizer.from_pretrained(args.base)
    adapter = load_adapter_weights(args.adapter)
    n = merge_into(model, adapter, cfg["lora_alpha"] / cfg["r"])
    print(f"merged {n} LoRA pairs")
    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)


if __name__ == "__main__":
    main()
