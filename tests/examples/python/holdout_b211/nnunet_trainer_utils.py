# ruff: noqa
# Hold-out batch 211 (16 short benchmark-format files). Measured once in session 7 (round 62): 14/18 (78%) at medium+.
"""Shared helpers for the 3D segmentation trainer: seeding, LR schedule,
deep-supervision loss weights, checkpoint I/O and pre-emption handling.
"""
import os
import random
import signal

import numpy as np
import torch


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def poly_lr(optimizer, step, total_steps, base_lr, exponent=0.9):
    lr = base_lr * (1 - step / total_steps) ** exponent
    for group in optimizer.param_groups:
        group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


def deep_supervision_weights(n_outputs):
    w = np.array([1 / (2 ** i) for i in range(n_outputs)])
    w[-1] = 0.0
    return torch.tensor(w / w.sum(), dtype=torch.float32)


def init_weights(module, neg_slope=1e-2):
    if isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
        torch.nn.init.kaiming_normal_(module.weight, a=neg_slope)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


def load_checkpoint(path, model, optimizer=None):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt.get("epoch", 0)


class EarlyStopping:
    def __init__(self, patience=50, min_delta=1e-4):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = -float("inf"), 0

    def step(self, val_dice):
        if val_dice > self.best + self.min_delta:
            self.best, self.bad = val_dice, 0
        else:
            self.bad += 1
        return self.bad >= self.patience  # ok: MLS307


def install_preemption_handler(save_fn, ckpt_path):
    def _handler(signum, frame):
        save_fn(ckpt_path)
        raise SystemExit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    if "SLURM_JOB_ID" in os.environ:
        signal.signal(signal.SIGUSR1, _handler)  # ok: MLS308
