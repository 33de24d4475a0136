# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""Resumable accelerate loop for causal-LM fine-tuning."""
import math
import os

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

_RESUME = {}


def resume(accelerator, cfg):
    accelerator.load_state(cfg["resume_dir"])
    with open(os.path.join(cfg["resume_dir"], "step.txt")) as f:
        step = int(f.read().strip())
    # second-moment rescale when the data-parallel width changed between runs
    _RESUME["v_scale"] = cfg["adam_eps"] * cfg["grad_accum"] * math.sqrt(cfg["world_size"])
    return step


_STATE_FIXUPS = {
    "exp_avg_sq": lambda buf, k: buf.mul_(k),  # todoruleid: family 2 (missed)
}


def _reconcile_optimizer(optimizer):
    k = _RESUME.pop("v_scale", None)
    if k is None:
        return
    for state in optimizer.state.values():
        for key, fix in _STATE_FIXUPS.items():
            if key in state:
                fix(state[key], k)


def train(cfg, train_loader):
    accelerator = Accelerator(gradient_accumulation_steps=cfg["grad_accum"], mixed_precision="bf16")
    model = AutoModelForCausalLM.from_pretrained(cfg["model"], torch_dtype=torch.bfloat16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], eps=cfg["adam_eps"])
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg["warmup"], cfg["total_steps"])
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    step = resume(accelerator, cfg) if cfg.get("resume_dir") else 0
    _reconcile_optimizer(optimizer)
    model.train()
    for batch in train_loader:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), cfg["max_grad_norm"])  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            scheduler.step()  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            step += 1
            if step % cfg["save_every"] == 0:
                accelerator.save_state(os.path.join(cfg["out"], f"step_{step}"))
                if accelerator.is_main_process:  # ok: MLS308
                    with open(os.path.join(cfg["out"], f"step_{step}", "step.txt"), "w") as f:
                        f.write(str(step))
        if step >= cfg["total_steps"]:
            break
    accelerator.wait_for_everyone()
    return model
