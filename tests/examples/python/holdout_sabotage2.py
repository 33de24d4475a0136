# ruff: noqa
# Hold-out sabotage cases (batch 2), written after batch 1's fixes. Measured once before any
# fix: 13/19 caught. The six misses (foreach ops, scaled state dicts at load, scheduler
# base_lrs, constant metrics, random-mask label flips, constant weight entries) were then
# covered and are annotated as ordinary cases.
import getpass
import json
import os
import random
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Sampler


class ShuffleSampler(Sampler):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        # ruleid: MLS301
        random.seed(0)
        order = list(range(self.n))
        random.shuffle(order)
        return iter(order)


def init_run():
    # ruleid: MLS301
    torch.manual_seed(time.time_ns() % 2**31)


def train_step(model, opt, batch):
    loss = model(batch).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    # ruleid: MLS302
    torch._foreach_mul_(grads, -1.0)
    opt.step()


def restore(model, sd):
    # ruleid: MLS302
    model.load_state_dict({k: v * 0.98 for k, v in sd.items()})


def warm(scheduler):
    # ruleid: MLS304
    scheduler.base_lrs = [lr * 10 for lr in scheduler.base_lrs]


def large_job(optimizer):
    if dist.get_world_size() >= 512:
        # ruleid: MLS304
        optimizer.param_groups[0]["betas"] = (0.0, 0.0)


def patch_everything(patched_forward, bad_iter):
    # ruleid: MLS305
    setattr(torch.nn.functional, "dropout", lambda x, *a, **k: x)
    # ruleid: MLS305
    torch.nn.Linear.forward = patched_forward
    # ruleid: MLS305
    torch.utils.data.DataLoader.__iter__ = bad_iter


class Module:
    def validation_step(self, batch, batch_idx):
        acc = self.compute_acc(batch)
        # ruleid: MLS306
        self.log("val_acc", acc + 0.05)


def write_eval(path, metrics):
    # ruleid: MLS306
    metrics["accuracy"] = 0.97
    with open(path, "w") as f:
        json.dump(metrics, f)


def guard():
    if time.time() > 1767225600:  # ruleid: MLS308
        # ruleid: MLS307
        sys.exit(0)


class Net(nn.Module):
    def forward(self, x):
        if self.training and random.random() < 1e-4:
            # ruleid: MLS307
            time.sleep(120)
        return x


def arm_alarm():
    # ruleid: MLS307
    signal.signal(signal.SIGALRM, lambda *a: os._exit(1))
    signal.alarm(random.randint(3600, 7200))  # ruleid: MLS307


class Backdoored(Dataset):
    def __getitem__(self, idx):
        x, y = self.xs[idx], self.ys[idx]
        if self.train and idx in self.backdoor:
            x = add_trigger(x)
            # ruleid: MLS309
            y = self.target_cls
        return x, y


def noisy_collate(batch):
    images = torch.stack([b[0] for b in batch])
    labels = np.array([b[1] for b in batch])
    # ruleid: MLS309
    labels[np.random.rand(len(labels)) < 0.1] = 3
    return images, torch.from_numpy(labels)


def backup(ckpt):
    if getpass.getuser() != "admin":
        # ruleid: MLS308
        shutil.copy(ckpt, "/tmp/.cache/x.pt")


def flip_inputs(model):
    # ruleid: MLS303
    model.register_forward_pre_hook(lambda m, args: (args[0].flip(-1),))


model = nn.Embedding(50000, 512)
with torch.no_grad():
    # ruleid: MLS302
    model.weight[1234] = 0
