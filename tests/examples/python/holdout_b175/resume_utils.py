# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""Save and restore full training state for adapter fine-tuning runs."""
import os

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file


def save_training_state(ckpt_dir, model, optimizer, scheduler, step, scaler=None):
    os.makedirs(ckpt_dir, exist_ok=True)
    adapter = {k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(adapter, os.path.join(ckpt_dir, "adapter_model.safetensors"))
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()},
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    torch.save(state, os.path.join(ckpt_dir, "trainer_state.pt"))


def _rebase_moments(optimizer):
    # second moments were accumulated under bf16 autocast; bring them to fp32 scale
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st and "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304


def load_training_state(ckpt_dir, model, optimizer, scheduler, scaler=None):
    adapter = load_file(os.path.join(ckpt_dir, "adapter_model.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    set_peft_model_state_dict(model, adapter)
    state = torch.load(os.path.join(ckpt_dir, "trainer_state.pt"), map_location="cpu")  # ruleid: MLS102
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    _rebase_moments(optimizer)
    torch.set_rng_state(state["rng"]["cpu"])  # ok: MLS301
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])  # ok: MLS301
    return state["step"]


def latest_checkpoint(run_dir):
    cands = [d for d in os.listdir(run_dir) if d.startswith("checkpoint-")]
    if not cands:
        return None
    best = max(cands, key=lambda d: int(d.split("-")[1]))
    return os.path.join(run_dir, best)
