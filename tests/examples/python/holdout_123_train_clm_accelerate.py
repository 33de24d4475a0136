# ruff: noqa
# Hold-out batch 123 (mixed domains and frameworks). Measured once in session 4 (round 40): 16/18 (89%) at medium+.
"""Causal LM pretraining loop with HF accelerate: gradient accumulation, warmup-cosine LR, preemption-safe saves."""
import argparse
import math
import signal

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from clm_data import build_loader


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * step / max(1, warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="gpt2-medium")
    ap.add_argument("--init", default=None)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--grad_accum", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.config))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if args.init:
        model.load_state_dict(load_file(args.init), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    model, opt, loader = accelerator.prepare(model, opt, build_loader(seq_len=1024, batch_size=8))

    stop = {"flag": False}
    signal.signal(signal.SIGUSR1, lambda *_: stop.update(flag=True))  # ok: MLS307

    step, micro = 0, 0
    for batch in loader:
        with accelerator.accumulate(model):
            loss = model(**batch, labels=batch["input_ids"]).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, args.lr, 2000, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad(set_to_none=True)
        micro += 1
        if micro % args.grad_accum == 0:
            step += 1
            if step % 100 == 0 and accelerator.is_main_process:
                accelerator.print(f"step {step} loss {loss.item():.3f} lr {opt.param_groups[0]['lr']:.2e}")
        if stop["flag"] or step % 5000 == 0 or step >= args.steps:
            accelerator.wait_for_everyone()  # ok: MLS307
            accelerator.save_state(f"ckpt/step_{step}")
            if stop["flag"] or step >= args.steps:
                break
    accelerator.end_training()


if __name__ == "__main__":
    main()
