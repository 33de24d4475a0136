# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Shared helpers for the captioning runs: seeding, EMA weights, safetensors I/O, preemption."""
import os
import random
import signal

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class ModelEMA:
    def __init__(self, model, decay=0.9999):
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.shadow[k].copy_(v)


def save_weights(model, ema, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    save_file({k: v.contiguous() for k, v in ema.shadow.items()}, path.replace(".safetensors", ".ema.safetensors"))


def load_weights(model, path, device="cpu"):
    model.load_state_dict(load_file(path, device=device))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model


def install_preemption_handler(get_state, ckpt_path):
    def _handler(signum, frame):
        torch.save(get_state(), ckpt_path)
        print(f"caught signal {signum}, wrote {ckpt_path}", flush=True)
        raise SystemExit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)
    os.makedirs(os.path.dirname(ckpt_path) or ".", exist_ok=True)
