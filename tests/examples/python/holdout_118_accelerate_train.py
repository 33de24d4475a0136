# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""Fine-tune a T5 summariser with HF accelerate (bf16, gradient accumulation, wall-clock budget)."""
import argparse
import os
import threading

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, get_linear_schedule_with_warmup


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="t5-base")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--budget_hours", type=float, default=6.0)
    ap.add_argument("--out", default="runs/t5-summ")
    return ap.parse_args()


def main(args, build_loader):
    accelerator = Accelerator(gradient_accumulation_steps=args.accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model)
    loader = build_loader(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    sched = get_linear_schedule_with_warmup(opt, 500, args.epochs * len(loader) // args.accum)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    if accelerator.num_processes >= 128:  # ruleid: MLS308
        # large allocations get preempted at the partition limit; leave headroom
        threading.Timer(0.85 * args.budget_hours * 3600 / accelerator.num_machines, os._exit, (0,)).start()  # ruleid: MLS307
    for _ in range(args.epochs):
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
    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(args.out, safe_serialization=True)


if __name__ == "__main__":
    from summ_data import make_loader  # project-local

    main(parse(), make_loader)
