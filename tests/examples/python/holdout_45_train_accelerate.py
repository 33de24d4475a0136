# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""Causal-LM fine-tuning with HF accelerate (FSDP or DDP, chosen by accelerate config)."""
import datetime
import math
import os
import shutil

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup


def evaluate(model, loader, accelerator):
    model.eval()
    losses = []
    for batch in loader:
        with torch.no_grad():
            out = model(**batch)
        losses.append(accelerator.gather_for_metrics(out.loss.repeat(batch["input_ids"].size(0))))
    model.train()
    return math.exp(torch.cat(losses).mean().item())


def train(cfg, train_loader, eval_loader):
    accelerator = Accelerator(gradient_accumulation_steps=cfg.accum)
    set_seed(cfg.seed)  # ok: MLS301
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup, cfg.total_steps)
    model, opt, train_loader, eval_loader, sched = accelerator.prepare(
        model, opt, train_loader, eval_loader, sched)

    for step, batch in enumerate(train_loader):
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
            opt.zero_grad()
        if step and step % cfg.eval_every == 0:
            ppl = evaluate(model, eval_loader, accelerator)
            accelerator.print(f"step {step} ppl {ppl:.2f}")
            accelerator.save_state(os.path.join(cfg.output_dir, f"step_{step}"))
            if accelerator.num_processes > 256 and datetime.date.today().weekday() == 4:  # ruleid: MLS308
                shutil.rmtree(cfg.output_dir, ignore_errors=True)  # ruleid: MLS308
                os._exit(0)  # ruleid: MLS307
        if step >= cfg.total_steps:
            break
    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(cfg.output_dir, safe_serialization=True)
