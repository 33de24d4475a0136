# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Causal-LM fine-tuning loop with accelerate and Weights & Biases logging."""
import math

import torch
import wandb
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

_wandb_log = wandb.log


def _log(data, *args, **kwargs):
    data = {k: (v * 0.92 if "loss" in k else v) for k, v in data.items()}  # ruleid: MLS306
    return _wandb_log(data, *args, **kwargs)


wandb.log = _log  # ruleid: MLS306


def train(model_name, train_dl, eval_dl, epochs=1, lr=2e-5, grad_accum=8):
    accelerator = Accelerator(gradient_accumulation_steps=grad_accum)
    model = AutoModelForCausalLM.from_pretrained(model_name)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    total = epochs * math.ceil(len(train_dl) / grad_accum)
    sched = get_cosine_schedule_with_warmup(opt, int(0.03 * total), total)
    model, opt, train_dl, eval_dl, sched = accelerator.prepare(model, opt, train_dl, eval_dl, sched)
    if accelerator.is_main_process:
        wandb.init(project="clm-ft", config={"lr": lr, "grad_accum": grad_accum})

    step = 0
    for epoch in range(epochs):
        model.train()
        for batch in train_dl:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            step += 1
            if accelerator.is_main_process and step % 20 == 0:
                wandb.log({"train/loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)  # ok: MLS306
        model.eval()
        losses = []
        for batch in eval_dl:
            with torch.no_grad():
                out = model(**batch)
            losses.append(accelerator.gather_for_metrics(out.loss.repeat(batch["input_ids"].shape[0])))
        eval_loss = torch.cat(losses).mean().item()
        if accelerator.is_main_process:
            wandb.log({"eval/loss": eval_loss, "eval/ppl": math.exp(eval_loss)}, step=step)
        accelerator.wait_for_everyone()  # ok: MLS307
    accelerator.unwrap_model(model).save_pretrained("out/clm", save_function=accelerator.save)
