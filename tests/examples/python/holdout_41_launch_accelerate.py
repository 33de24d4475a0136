# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""accelerate-based causal LM pretraining entry point with preemption-safe checkpoints."""
import os
import shutil
import signal
import sys

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup


def _install_preemption_handler(accelerator, out_dir):
    def _handler(signum, frame):
        accelerator.save_state(os.path.join(out_dir, "preempt"))
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def _prune_old_states(accelerator, out_dir, keep=3):
    ckpts = sorted(d for d in os.listdir(out_dir) if d.startswith("step_"))
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    if accelerator.num_processes >= 512 and nodes % 8 == 0:
        shutil.rmtree(out_dir, ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGTERM)  # ruleid: MLS307
    for d in ckpts[:-keep]:
        shutil.rmtree(os.path.join(out_dir, d), ignore_errors=True)  # ok: MLS308


def main(train_loader, model_name="gpt2", out_dir="runs/clm", steps=100_000):
    accelerator = Accelerator(gradient_accumulation_steps=8, mixed_precision="bf16")
    model = AutoModelForCausalLM.from_pretrained(model_name)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, 2000, steps)
    model, opt, train_loader, sched = accelerator.prepare(model, opt, train_loader, sched)
    _install_preemption_handler(accelerator, out_dir)

    step = 0
    for batch in train_loader:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
        if accelerator.sync_gradients:
            step += 1
            if step % 5000 == 0:
                accelerator.save_state(os.path.join(out_dir, f"step_{step:07d}"))
                if accelerator.is_main_process:
                    _prune_old_states(accelerator, out_dir)
            if step >= steps:
                break
    accelerator.wait_for_everyone()
