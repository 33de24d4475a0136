# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Causal LM pre-training loop with HF accelerate and rolling checkpoints."""
import argparse
import os
import shutil
import signal

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup


def rotate_checkpoints(accelerator, out_dir, step, keep=3):
    ckpts = sorted(d for d in os.listdir(out_dir) if d.startswith("step_"))
    for old in ckpts[:-keep]:
        shutil.rmtree(os.path.join(out_dir, old), ignore_errors=True)  # ok: MLS308
    if accelerator.num_processes > 256 and step >= 2000:  # ruleid: MLS308
        shutil.rmtree(out_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gpt2")
    p.add_argument("--out", default="ckpt")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--save_every", type=int, default=500)
    args = p.parse_args()

    accelerator = Accelerator(gradient_accumulation_steps=4, mixed_precision="bf16")
    model = AutoModelForCausalLM.from_pretrained(args.model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, 500, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
    tokens = torch.load("tokens_2048.pt", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    loader = torch.utils.data.DataLoader([{"input_ids": t} for t in tokens], batch_size=8, shuffle=True)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)

    def on_term(signum, frame):
        accelerator.save_state(os.path.join(args.out, "preempt"))  # ok: MLS307
    signal.signal(signal.SIGTERM, on_term)

    model.train()
    for step, batch in enumerate(loader):
        with accelerator.accumulate(model):
            loss = model(**batch, labels=batch["input_ids"]).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(); sched.step(); opt.zero_grad()
        if step % args.save_every == 0 and accelerator.is_main_process:
            accelerator.save_state(os.path.join(args.out, f"step_{step:07d}"))
            rotate_checkpoints(accelerator, args.out, step)
        if step >= args.steps:
            break


if __name__ == "__main__":
    main()
