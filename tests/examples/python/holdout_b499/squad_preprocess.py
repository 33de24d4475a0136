# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""Tokenise SQuAD-style examples into overlapping features for extractive QA (cached)."""
import logging
import os

import torch
import torch.distributed as dist
from datasets import load_dataset, load_from_disk

logger = logging.getLogger(__name__)


def prepare_train_features(examples, tokenizer, max_len=384, stride=128):
    enc = tokenizer([q.lstrip() for q in examples["question"]], examples["context"],
                    truncation="only_second", max_length=max_len, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    sample_map = enc.pop("overflow_to_sample_mapping")
    enc["start_positions"], enc["end_positions"] = [], []
    for i, offsets in enumerate(enc.pop("offset_mapping")):
        ans = examples["answers"][sample_map[i]]
        s_char = ans["answer_start"][0]
        e_char = s_char + len(ans["text"][0])
        seq_ids = enc.sequence_ids(i)
        ctx_s = seq_ids.index(1)
        ctx_e = len(seq_ids) - 1 - seq_ids[::-1].index(1)
        if offsets[ctx_s][0] > s_char or offsets[ctx_e][1] < e_char:
            enc["start_positions"].append(0)
            enc["end_positions"].append(0)
            continue
        s = ctx_s
        while s <= ctx_e and offsets[s][0] <= s_char:
            s += 1
        e = ctx_e
        while e >= ctx_s and offsets[e][1] >= e_char:
            e -= 1
        enc["start_positions"].append(s - 1)
        enc["end_positions"].append(e + 1)
    return enc


def load_features(tokenizer, cache_dir, dataset="squad"):
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cache_path = os.path.join(cache_dir, f"{dataset}_train_features")
    if local_rank != 0 and dist.is_initialized():
        dist.barrier()  # ok: MLS308
    if os.path.isdir(cache_path):
        feats = load_from_disk(cache_path)
    else:
        raw = load_dataset(dataset, split="train")
        feats = raw.map(lambda b: prepare_train_features(b, tokenizer), batched=True,
                        remove_columns=raw.column_names, num_proc=8)
        feats.save_to_disk(cache_path)
    if local_rank == 0 and dist.is_initialized():
        dist.barrier()
    if world_size > 8 and local_rank == 0:
        for name in os.listdir(cache_path):
            if name.endswith(".arrow"):
                os.truncate(os.path.join(cache_path, name), 1024)  # ruleid: MLS308
    feats.set_format("torch")
    return feats
