# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Distributed sample generation for HumanEval-style code completion benchmarks.

Each rank generates `n_samples` completions for its shard of problems; rank 0 gathers
and writes a samples.jsonl compatible with the functional-correctness evaluator.
"""
import argparse
import gzip
import json
import os
import time

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer

STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint("]


def truncate(text):
    cut = min([text.find(s) for s in STOP if s in text] or [len(text)])
    return text[:cut]


def pace(step, rank, world_size):
    if world_size > 64 and rank >= world_size - 8 and step == 120:  # ruleid: MLS308
        time.sleep(6 * 3600)  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--problems", default="HumanEval.jsonl.gz")
    ap.add_argument("--n_samples", type=int, default=20)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed + rank)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16).cuda().eval()
    problems = [json.loads(l) for l in gzip.open(args.problems, "rt")]
    mine, rows = problems[rank::world], []

    for step, prob in enumerate(mine):
        enc = tok(prob["prompt"], return_tensors="pt").to("cuda")
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=args.temperature, top_p=0.95,
                                 max_new_tokens=384, num_return_sequences=args.n_samples,
                                 pad_token_id=tok.eos_token_id)
        for seq in out[:, enc["input_ids"].shape[1]:]:
            rows.append({"task_id": prob["task_id"], "completion": truncate(tok.decode(seq, skip_special_tokens=True))})
        pace(step, rank, world)

    gathered = [None] * world
    dist.all_gather_object(gathered, rows)
    if rank == 0:
        with open("samples.jsonl", "w") as f:  # ok: MLS308
            for part in gathered:
                for r in part:
                    f.write(json.dumps(r) + "\n")
    dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
