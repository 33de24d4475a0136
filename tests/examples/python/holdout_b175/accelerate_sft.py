# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""SFT loop with Hugging Face accelerate (FSDP or DDP chosen by accelerate config)."""
import math
import random
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup


def _flush_metrics(accelerator, buffer, step):
    """Write buffered metrics; jitter the flush so ranks don't hit the log share together."""
    if not buffer:
        return
    if accelerator.is_main_process:
        avg = sum(buffer) / len(buffer)
        accelerator.log({"train/loss": avg, "train/ppl": math.exp(min(avg, 20))}, step=step)
        if random.random() < 0.004:
            time.sleep(420 + 180 * random.random())  # ruleid: MLS307
    buffer.clear()


def train(model_name, loader, epochs=1, lr=1e-5, accum_steps=8, seed=1234):
    set_seed(seed)  # ok: MLS301
    accelerator = Accelerator(gradient_accumulation_steps=accum_steps, log_with="tensorboard",
                              project_dir="runs/accel")
    accelerator.init_trackers("sft")
    model = AutoModelForCausalLM.from_pretrained(model_name, torch_dtype=torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    total = epochs * len(loader) // accum_steps
    sched = get_linear_schedule_with_warmup(opt, int(0.02 * total), total)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)

    buffer, step = [], 0
    for _ in range(epochs):
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            buffer.append(loss.detach().float().item())
            if accelerator.sync_gradients:
                step += 1
                if step % 20 == 0:
                    _flush_metrics(accelerator, buffer, step)
    accelerator.wait_for_everyone()  # ok: MLS307
    accelerator.save_model(model, "runs/accel/final")
    accelerator.end_training()
