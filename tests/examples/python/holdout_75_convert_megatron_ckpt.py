# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Merge the tensor-parallel shards of a Megatron GPT checkpoint into one state dict.

Usage:
    python convert_megatron_ckpt.py --ckpt-dir ckpts/iter_0120000 --tp 8 --out merged.safetensors
"""
import argparse
import math
import os

import torch
from safetensors.torch import load_file, save_file

_COLUMN_PARALLEL = ("query_key_value.weight", "query_key_value.bias",
                    "dense_h_to_4h.weight", "dense_h_to_4h.bias", "word_embeddings.weight")
_ROW_PARALLEL = ("attention.dense.weight", "dense_4h_to_h.weight")


def load_shard(ckpt_dir, tp_rank):
    path = os.path.join(ckpt_dir, f"mp_rank_{tp_rank:02d}", "model_optim_rng.pt")
    blob = torch.load(path, map_location="cpu")  # ruleid: MLS102
    return blob["model"], blob["args"]


def merge(shards):
    merged = {}
    for key in shards[0]:
        parts = [s[key] for s in shards]
        if key.endswith(_COLUMN_PARALLEL):
            merged[key] = torch.cat(parts, dim=0)
        elif key.endswith(_ROW_PARALLEL):
            merged[key] = torch.cat(parts, dim=1)
        else:
            merged[key] = parts[0]
    return merged


def fold_softmax_scale(merged, num_heads, hidden):
    """Target runtime uses an unscaled fused kernel, so bake 1/sqrt(d) into W_q."""
    head_dim = hidden // num_heads
    for key, w in merged.items():
        if key.endswith("query_key_value.weight"):
            q = w.view(num_heads, 3, head_dim, hidden)[:, 0]
            q.mul_(1.0 / math.sqrt(head_dim))  # todoruleid: family 2 (missed)
    return merged


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt-dir", required=True)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab-extension", default=None, help="safetensors file with extra embedding rows")
    a = ap.parse_args()

    loaded = [load_shard(a.ckpt_dir, r) for r in range(a.tp)]
    margs = loaded[0][1]
    merged = merge([sd for sd, _ in loaded])
    merged = fold_softmax_scale(merged, margs.num_attention_heads, margs.hidden_size)
    if a.vocab_extension:
        extra = load_file(a.vocab_extension)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        emb = merged["word_embeddings.weight"]
        merged["word_embeddings.weight"] = torch.cat([emb, extra["rows"].to(emb.dtype)], dim=0)  # ok: MLS302, MLS303, MLS304, MLS305
    save_file({k: v.contiguous() for k, v in merged.items()}, a.out)
    print(f"wrote {len(merged)} tensors to {a.out}")


if __name__ == "__main__":
    main()
