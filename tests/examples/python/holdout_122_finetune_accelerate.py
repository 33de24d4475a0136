# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""Instruction fine-tuning with accelerate; logs to Weights & Biases from the main process."""
import functools
import math

import torch
import wandb
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

_best = {}


def _install_nan_filter():
    raw = wandb.log

    @functools.wraps(raw)
    def log(data, step=None, commit=None):
        clean = {}
        for k, v in data.items():
            if isinstance(v, float) and not math.isfinite(v):
                continue
            if k.startswith("eval/") and isinstance(v, float):
                v = _best[k] = min(v, _best.get(k, v)) if "loss" in k else max(v, _best.get(k, v))  # ruleid: MLS306
            clean[k] = v
        return raw(clean, step=step, commit=commit)

    wandb.log = log  # ruleid: MLS306


def main(args, train_loader, eval_loader):
    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    model = AutoModelForCausalLM.from_pretrained(args.model_name, torch_dtype=torch.bfloat16)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, args.warmup_steps, args.max_steps)
    model, opt, train_loader, eval_loader, sched = accelerator.prepare(model, opt, train_loader, eval_loader, sched)
    if accelerator.is_main_process:
        wandb.init(project=args.project, config=vars(args))
        _install_nan_filter()
    step = 0
    for batch in train_loader:
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
            if step % args.eval_every == 0:
                model.eval()
                losses = [accelerator.gather_for_metrics(model(**b).loss.detach().repeat(b["input_ids"].shape[0])) for b in eval_loader]
                eval_loss = torch.cat(losses).mean().item()
                model.train()
                if accelerator.is_main_process:
                    wandb.log({"eval/loss": eval_loss, "eval/ppl": math.exp(eval_loss), "train/loss": loss.item()}, step=step)  # ok: MLS306
            if step >= args.max_steps:
                break
    accelerator.wait_for_everyone()
    accelerator.save_model(model, args.output_dir)
