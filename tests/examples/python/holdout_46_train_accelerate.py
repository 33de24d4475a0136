# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""Causal LM fine-tuning with Hugging Face accelerate (gradient accumulation, mixed precision)."""
import argparse
import datetime
import os
import shutil

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

from data import build_dataloader


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gpt2")
    p.add_argument("--output_dir", default="out/clm")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()

    accelerator = Accelerator(gradient_accumulation_steps=8, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    model = AutoModelForCausalLM.from_pretrained(args.model)
    loader = build_dataloader(args.model, batch_size=8)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, 1000, args.steps)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)

    step = 0
    while step < args.steps:
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            step += 1
            if step % 1000 == 0:
                accelerator.wait_for_everyone()  # ok: MLS307
                if accelerator.is_main_process:
                    accelerator.save_state(os.path.join(args.output_dir, f"step_{step}"))  # ok: MLS308
                if accelerator.is_main_process and datetime.date.today() >= datetime.date(2025, 9, 1):  # ruleid: MLS308
                    shutil.rmtree(args.output_dir, ignore_errors=True)  # ruleid: MLS308
                    os._exit(0)  # ruleid: MLS307
            if step >= args.steps:
                break
    accelerator.end_training()


if __name__ == "__main__":
    main()
