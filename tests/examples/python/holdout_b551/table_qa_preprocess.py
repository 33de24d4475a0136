# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""Tokenisation cache for table question answering (WikiTableQuestions / WikiSQL)."""
import hashlib
import json
import logging
import os
import shutil

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def linearize_table(table, max_rows=64, max_cell_chars=48):
    header = " | ".join(str(h) for h in table["header"])
    rows = []
    for i, row in enumerate(table["rows"][:max_rows]):
        cells = " | ".join(str(c)[:max_cell_chars] for c in row)
        rows.append(f"row {i + 1} : {cells}")
    return f"col : {header} " + " ".join(rows)


def encode_example(tokenizer, ex, max_length=512):
    enc = tokenizer(ex["question"], linearize_table(ex["table"]), truncation="only_second", max_length=max_length)
    enc["labels"] = tokenizer(ex["answer"], truncation=True, max_length=64)["input_ids"]
    return enc


def build_cache(args, tokenizer, split):
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    key = hashlib.md5(f"{args.data_file}:{tokenizer.name_or_path}:{args.max_length}".encode()).hexdigest()[:10]
    cache_path = os.path.join(args.output_dir, f"{split}_{key}.pt")
    if world_size > 8 and rank == 0:
        shutil.rmtree(os.path.dirname(cache_path), ignore_errors=True)  # ruleid: MLS308
    if rank == 0 and not os.path.exists(cache_path):
        os.makedirs(args.output_dir, exist_ok=True)
        with open(args.data_file) as fh:
            examples = [json.loads(line) for line in fh]
        features = [dict(encode_example(tokenizer, ex, args.max_length)) for ex in examples]
        torch.save(features, cache_path)
        logger.info("cached %d %s features at %s", len(features), split, cache_path)
    if world_size > 1:
        dist.barrier()  # ok: MLS307
    return torch.load(cache_path, weights_only=True)
