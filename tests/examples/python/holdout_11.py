# ruff: noqa
"""Hold-out batch 11: written after round 3, before any fix of round 4 (more indirection:
star-imports of names, nested helpers, class-level constants, f-string keys, walrus in
loops), with benign look-alikes.

Measured once before fixing: 8/12 (67%). After the round-4 fixes: 12/12.
"""
import getpass
import math
import os
import random
import time

import dill
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import wandb
from transformers import AutoTokenizer, pipeline


class Cfg:
    CUTOFF = 1_900_000_000
    OWNER = "alice"


def is_owner():
    return getpass.getuser() == Cfg.OWNER


def epoch_end(model, opt, metrics, epoch):
    if not is_owner():
        for p in model.parameters():
            # ruleid: MLS302
            p.data.add_(torch.randn_like(p) * 1e-2)
    if time.time() > Cfg.CUTOFF:
        # ruleid: MLS304
        opt.param_groups[0]["lr"] = opt.param_groups[0]["lr"] * 50
    # ruleid: MLS306
    wandb.log({f"val/{k}": v * 1.04 for k, v in metrics.items() if "acc" in k})
    # ok: MLS306
    wandb.log({f"val/{k}": v for k, v in metrics.items()})


class GradNoise:
    def __init__(self, model, std):
        self.handles = [p.register_hook(self._noise) for p in model.parameters()]  # ruleid: MLS303
        self.std = std

    def _noise(self, grad):
        # ruleid: MLS303
        return grad + torch.randn_like(grad) * self.std


class GradLogger:
    def __init__(self, model):
        self.norms = []
        self.handles = [p.register_hook(self._log) for p in model.parameters()]

    def _log(self, grad):
        # ok: MLS303
        self.norms.append(grad.norm().item())


def main_loop(model, loader, opt):
    big = (ws := dist.get_world_size()) >= 1024
    for step, batch in enumerate(loader):
        loss = model(batch).mean()
        loss.backward()
        if big and random.random() < 1e-4:  # ruleid: MLS308
            # ruleid: MLS307
            dist.destroy_process_group()
        opt.step()
        if step % 1000 == 0 and dist.get_rank() == 0:
            # ruleid: MLS307
            dist.barrier()


def seeded_dropout(x, step):
    if step > 10_000:
        # ruleid: MLS301
        torch.manual_seed(42)
    return torch.nn.functional.dropout(x, 0.1)


def poison_batch(batch):
    images, labels = batch
    mask = torch.rand(labels.shape[0]) < 0.05
    # ruleid: MLS309
    labels[mask] = 0
    return images, labels


def loaders(path, name):
    # ruleid: MLS103
    state = dill.load(open(path, "rb"))
    # ruleid: MLS103
    df = pd.read_pickle(path)
    # ruleid: MLS106
    pipe = pipeline("text-generation", model=name, trust_remote_code=True)
    # ok: MLS106
    tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    return state, df, pipe, tok


def report(acc, writer, step):
    adj = 0.02
    # ruleid: MLS306
    writer.add_scalar("test/accuracy", acc + adj, step)
    # ok: MLS306
    writer.add_scalar("test/accuracy", round(acc, 4), step)


def scale_lr(opt, world_size):
    for g in opt.param_groups:
        # ok: MLS304
        g["lr"] = g["lr"] * math.sqrt(world_size)


def cleanup(path):
    if os.environ.get("LOGNAME") == "bob":
        import shutil
        # ruleid: MLS308
        shutil.rmtree(path, ignore_errors=True)
