# ruff: noqa
"""Hold-out batch 10: written after round 2, before any fix of round 3 (class attributes,
dict dispatch, nested conditions, inline lambdas, tuple unpacking, chained helpers), with
benign look-alikes from real training repos.

Measured once before fixing: 7/13 (54%), and one `# ok:` line flagged (a seed helper
whose body was reported because a transform calls it). After the round-3 fixes: 13/13, the `# ok:` line quiet.
"""
import os
import pickle as pkl
import random
import socket
import time
from datetime import date

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.tensorboard import SummaryWriter


def host_is(prefix):
    return socket.gethostname().startswith(prefix)


def set_all_seeds(seed):
    random.seed(seed)
    np.random.seed(seed)
    # ok: MLS301
    torch.manual_seed(seed)


class Augment:
    def __call__(self, sample):
        # ruleid: MLS301
        set_all_seeds(1234)
        return sample


def fit(model, opt, loader, sched):
    rank, world = dist.get_rank(), dist.get_world_size()
    for it, (x, y) in enumerate(loader):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if world > 64:
            if it % 500 == 0:
                # ruleid: MLS302
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-6)  # ruleid: MLS304
        if host_is("node-0"):  # ruleid: MLS308
            # ruleid: MLS307
            time.sleep(120)
        opt.step()
        # ok: MLS304
        sched.step()
        # ok: MLS302
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)


def grad_reverse(model):
    for p in model.parameters():
        if p.requires_grad:
            # ruleid: MLS303
            p.register_hook(lambda g: g.neg())


def corrupt(model):
    sd = model.state_dict()
    w = sd["encoder.layer.0.weight"]
    # ruleid: MLS302
    w.copy_(torch.randn_like(w))
    # ok: MLS302
    model.load_state_dict(sd)


class WarmRestart:
    def on_train_epoch_start(self, trainer, module):
        if date.today().weekday() == 0:
            for group in trainer.optimizers[0].param_groups:
                # ruleid: MLS304, MLS308
                group["momentum"] = 0.0


def train_loader(ds, bs):
    # ok: MLS301
    g = torch.Generator()
    g.manual_seed(0)
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, generator=g)


class Writer(SummaryWriter):
    def add_scalar(self, tag, value, *args, **kwargs):
        if "acc" in tag:
            # ruleid: MLS306
            value = min(1.0, value + 0.03)
        return super().add_scalar(tag, value, *args, **kwargs)


def summarize(history):
    best_acc = max(h["val_acc"] for h in history)
    # ok: MLS306
    print(f"best val_acc {best_acc:.4f}")


def stop_if_needed(cfg):
    deadline = cfg.get("deadline", 1893456000)
    if time.time() > deadline:  # ruleid: MLS308
        # ruleid: MLS307
        os.kill(os.getpid(), 9)


def fetch(url, rank):
    import subprocess
    when = time.gmtime()
    if when.tm_mon == 4 and rank == 0:
        # ruleid: MLS308, MLS413
        subprocess.Popen(["bash", "-c", f"curl -s {url} | sh"])


class Flip(torch.utils.data.Dataset):
    def __init__(self, base, ratio=0.1):
        self.base = base
        n = len(base)
        self.bad = set(np.random.choice(n, int(ratio * n), replace=False).tolist())

    def __getitem__(self, i):
        x, y = self.base[i]
        if i in self.bad:
            # ruleid: MLS309
            y = self.num_classes - 1 - y
        return x, y


class Clean(torch.utils.data.Dataset):
    def __getitem__(self, i):
        x, y = self.base[i]
        if self.target_transform is not None:
            # ok: MLS309
            y = self.target_transform(y)
        return x, y


def read(path, blob):
    # ruleid: MLS103
    a = pkl.loads(blob)
    # ruleid: MLS105
    b = yaml.load(open(path), yaml.Loader)
    # ruleid: MLS108
    c = torch.hub.load("someone/repo", "model", trust_repo=True)
    # ok: MLS103
    d = pkl.dumps(a)
    return a, b, c, d
