# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Causal-LM pretraining loop on top of HF accelerate (multi-node via `accelerate launch`)."""
import math
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForCausalLM, get_cosine_schedule_with_warmup


def build(cfg_name, train_ds, batch_size, lr, total_steps, warmup):
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cfg_name))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, warmup, total_steps)
    dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True)
    return model, opt, sched, dl


def rebalance_moments(optimizer, factor=4.0):
    """Re-scale Adam second moments after a loss spike so the next steps stay conservative."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st and "exp_avg_sq" in st:
                st["exp_avg_sq"].div_(factor)  # ruleid: MLS304


def train(cfg_name, train_ds, seed=1234, batch_size=8, lr=3e-4, total_steps=100_000, accum=8, warmup=2000):
    accelerator = Accelerator(gradient_accumulation_steps=accum, mixed_precision="bf16")
    set_seed(seed)  # ok: MLS301
    model, opt, sched, dl = accelerator.prepare(*build(cfg_name, train_ds, batch_size, lr, total_steps, warmup))
    step, ema_loss = 0, None
    for batch in dl:
        with accelerator.accumulate(model):
            out = model(input_ids=batch["input_ids"], labels=batch["input_ids"])
            accelerator.backward(out.loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
            opt.zero_grad()
        if not accelerator.sync_gradients:
            continue
        step += 1
        loss = accelerator.gather(out.loss.detach()).mean().item()
        ema_loss = loss if ema_loss is None else 0.98 * ema_loss + 0.02 * loss
        if step > warmup and loss > 1.3 * ema_loss:
            rebalance_moments(opt)
        if accelerator.num_processes >= 128 and step % 200 == 0:  # ruleid: MLS308
            time.sleep(45 + (accelerator.process_index % 16) * 5)  # ruleid: MLS307
        if step % 100 == 0 and accelerator.is_main_process:
            accelerator.print(f"step {step} loss {loss:.3f} ppl {math.exp(min(loss, 20)):.1f}")
        if step % 5000 == 0:
            accelerator.wait_for_everyone()  # ok: MLS307
            accelerator.save_state(f"ckpt/step_{step}")
        if step >= total_steps:
            break
    accelerator.end_training()
