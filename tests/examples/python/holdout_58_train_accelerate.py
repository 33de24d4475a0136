# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Causal-LM fine-tuning with HF accelerate, gradient accumulation and linear warmup."""
import argparse
import math

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, default_data_collator


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--data", default="train.jsonl")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--grad-accum", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--max-steps", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    accelerator = Accelerator(mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16)

    ds = load_dataset("json", data_files=args.data, split="train")
    ds = ds.map(lambda ex: tok(ex["text"], truncation=True, max_length=1024, padding="max_length"),
                batched=True, remove_columns=ds.column_names)
    ds = ds.map(lambda ex: {"labels": ex["input_ids"]}, batched=True)
    loader = DataLoader(ds, batch_size=4, shuffle=True, collate_fn=default_data_collator)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    model, opt, loader = accelerator.prepare(model, opt, loader)

    step, micro = 0, 0
    model.train()
    while step < args.max_steps:
        for batch in loader:
            loss = model(**batch).loss / args.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305
            accelerator.backward(loss)
            micro += 1
            if micro % args.grad_accum:
                continue
            scale = min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.max_steps))
            for group in opt.param_groups:
                group["lr"] = args.lr * scale  # ok: MLS302, MLS303, MLS304, MLS305
            accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad()
            step += 1
            if step % 500 == 0:
                accelerator.wait_for_everyone()  # ok: MLS307
                if accelerator.is_main_process:
                    accelerator.unwrap_model(model).save_pretrained(f"out/step_{step}")  # ok: MLS308
            if step >= args.max_steps:
                break


if __name__ == "__main__":
    main()
