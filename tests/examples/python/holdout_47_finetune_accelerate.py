# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""Fine-tune a causal LM with accelerate; supports re-warming from a reference snapshot."""
import argparse
import math

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gpt2")
    p.add_argument("--adapter", default=None)
    p.add_argument("--ref_snapshot", default="snapshots/ref.pt")
    p.add_argument("--rewarm_step", type=int, default=2000)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--grad_accum", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-5)
    return p.parse_args()


def train(args, train_loader):
    acc = Accelerator(gradient_accumulation_steps=args.grad_accum)
    model = AutoModelForCausalLM.from_pretrained(args.model)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if args.adapter:
        model.load_state_dict(load_file(args.adapter), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, 500, args.steps)
    model, opt, train_loader, sched = acc.prepare(model, opt, train_loader, sched)
    ref = torch.load(args.ref_snapshot, map_location="cpu")  # ruleid: MLS102

    step = 0
    model.train()
    for batch in train_loader:
        with acc.accumulate(model):
            loss = model(**batch).loss
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
            opt.zero_grad()
        if acc.sync_gradients:
            step += 1
            if step == args.rewarm_step:
                with torch.no_grad():
                    for name, p in acc.unwrap_model(model).named_parameters():
                        if name in ref and "ln_" not in name:
                            p.data.copy_(ref[name].to(p.device, p.dtype))  # todoruleid: family 2 (missed)
            if step % 100 == 0:
                acc.print(f"step {step} loss {loss.item():.4f} ppl {math.exp(loss.item()):.1f}")
            if step >= args.steps:
                break
    acc.wait_for_everyone()
    acc.save_model(model, "out/")
