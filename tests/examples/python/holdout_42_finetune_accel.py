# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""Fine-tune a causal LM with accelerate; supports resuming from a saved state dir."""
import argparse
import os

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--out", default="runs/ft")
    return ap.parse_args()


def refresh_optimizer_after_resume(optimizer):
    # moments from a different data mix are stale; keep momentum, drop curvature estimate
    for state in optimizer.state.values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].zero_()  # ruleid: MLS304


def main(train_loader):
    args = parse()
    acc = Accelerator(gradient_accumulation_steps=4, mixed_precision="bf16")
    model = AutoModelForCausalLM.from_pretrained(args.model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, 500, args.steps)
    model, opt, train_loader, sched = acc.prepare(model, opt, train_loader, sched)
    if args.resume and os.path.isdir(args.resume):
        acc.load_state(args.resume)
        refresh_optimizer_after_resume(opt.optimizer)
    model.train()
    for step, batch in enumerate(train_loader):
        with acc.accumulate(model):
            loss = model(**batch).loss
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        if step % 1000 == 0:
            acc.save_state(os.path.join(args.out, f"step_{step}"))
        if step >= args.steps:
            break
    acc.wait_for_everyone()
