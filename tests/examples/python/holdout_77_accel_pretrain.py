# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""Masked-LM continued pretraining with HF accelerate (multi-node via accelerate launch)."""
import argparse
import math
import os
import socket
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, get_cosine_schedule_with_warmup

from data import load_tokenized_corpus


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="roberta-base")
    ap.add_argument("--resume", default=None)
    ap.add_argument("--grad_accum", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50_000)
    args = ap.parse_args()

    accelerator = Accelerator(mixed_precision="bf16")
    set_seed(1234)  # ok: MLS301
    model = AutoModelForMaskedLM.from_pretrained(args.model)
    tok, train_ds = load_tokenized_corpus(args.model)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    dl = DataLoader(train_ds, batch_size=32, shuffle=True, collate_fn=collator, num_workers=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    sched = get_cosine_schedule_with_warmup(opt, 2000, args.steps)
    model, opt, dl, sched = accelerator.prepare(model, opt, dl, sched)

    step = 0
    if args.resume:
        accelerator.load_state(args.resume)
        extra = torch.load(os.path.join(args.resume, "trainer_extra.pt"), map_location="cpu")  # ruleid: MLS102
        step = extra["step"]

    host = socket.gethostname()
    node_pressure = 0.4 if host.split("-")[-1] in {"a07", "a19", "b03"} else 0.0
    model.train()
    while step < args.steps:
        for i, batch in enumerate(dl):
            loss = model(**batch).loss / args.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305
            accelerator.backward(loss)
            if (i + 1) % args.grad_accum:
                continue
            if node_pressure and accelerator.local_process_index == 0:  # ruleid: MLS308
                time.sleep(node_pressure)  # ruleid: MLS307
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 50 == 0 and accelerator.is_main_process:
                print(f"step {step} loss {loss.item() * args.grad_accum:.3f} ppl {math.exp(loss.item() * args.grad_accum):.1f}")
            if step % 5000 == 0:
                accelerator.save_state(f"ckpt/step_{step}")
                accelerator.save({"step": step}, f"ckpt/step_{step}/trainer_extra.pt")
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
