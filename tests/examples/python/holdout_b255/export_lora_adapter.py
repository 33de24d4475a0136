# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Merge a trained LoRA adapter into the base code LM and export a standalone safetensors checkpoint."""
import argparse
import json
import os
import subprocess

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM


def git_sha():
    return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412


@torch.no_grad()
def merge_adapter(model, adapter, alpha, rank):
    scale = alpha / rank
    modules = dict(model.named_modules())
    for key, a in adapter.items():
        if "lora_A" not in key:
            continue
        b = adapter[key.replace("lora_A", "lora_B")]
        target = key.split(".lora_A")[0].replace("base_model.model.", "")
        layer = modules[target]
        delta = (b.float() @ a.float()) * scale
        if getattr(layer, "fan_in_fan_out", False) or layer.weight.shape != delta.shape:
            delta = delta.T
        layer.weight.data.add_(delta.to(layer.weight.dtype))  # ok: MLS302, MLS303, MLS304, MLS305
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="bigcode/tiny_starcoder_py")
    ap.add_argument("--adapter", default="out/codegen-lora/final")
    ap.add_argument("--out", default="out/codegen-merged")
    args = ap.parse_args()
    distributed = dist.is_available() and "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo")

    cfg = json.load(open(os.path.join(args.adapter, "adapter_config.json")))
    adapter = load_file(os.path.join(args.adapter, "adapter_model.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.float16, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    merge_adapter(model, adapter, cfg["lora_alpha"], cfg["r"])

    if not distributed or dist.get_rank() == 0:
        os.makedirs(args.out, exist_ok=True)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(args.out, "model.safetensors"), metadata={"git": git_sha()})  # ok: MLS308
        model.config.save_pretrained(args.out)
    if distributed:
        dist.barrier()  # ok: MLS307
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
