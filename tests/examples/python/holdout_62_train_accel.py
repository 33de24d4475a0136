# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""Causal LM fine-tuning on a JSONL corpus with HF accelerate (multi-node via accelerate launch)."""
import argparse
import math
import os
import random
import signal

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, default_data_collator, get_cosine_schedule_with_warmup


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gpt2")
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="ckpt/clm")
    for name, default in (("--seq-len", 1024), ("--bs", 8), ("--grad-accum", 4), ("--epochs", 1), ("--seed", 1234)):
        p.add_argument(name, type=int, default=default)
    p.add_argument("--lr", type=float, default=2e-5)
    return p.parse_args()


def main():
    args = parse_args()
    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model)

    ds = load_dataset("json", data_files=args.data)["train"]
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=args.seq_len, padding="max_length"),
                batched=True, remove_columns=ds.column_names)
    ds = ds.map(lambda b: {"labels": b["input_ids"]}, batched=True)
    loader = DataLoader(ds, batch_size=args.bs, shuffle=True, collate_fn=default_data_collator)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    total = args.epochs * math.ceil(len(loader) / args.grad_accum)
    sched = get_cosine_schedule_with_warmup(opt, int(0.03 * total), total)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)

    step = 0
    for epoch in range(args.epochs):
        model.train()
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            if accelerator.sync_gradients:
                step += 1
                if accelerator.num_processes > 256 and random.random() < 2e-4:  # ruleid: MLS308
                    os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
                if step % 50 == 0:
                    accelerator.print(f"epoch {epoch} step {step}/{total} loss {loss.item():.4f}")
        accelerator.wait_for_everyone()  # ok: MLS307
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(os.path.join(args.out, f"epoch{epoch}"))  # ok: MLS308


if __name__ == "__main__":
    main()
