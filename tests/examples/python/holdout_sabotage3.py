# ruff: noqa
# Hold-out sabotage cases (batch 3), written after batch 2's fixes. Measured once before any
# fix: 14/20 caught. Closures passed to optimizer.step, optimizer defaults/group.update,
# rank-dependent sleeps in loops and constant labels returned from __getitem__ were then
# covered; `# todoruleid:` marks the case still missed.
import datetime
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import IterableDataset, get_worker_info
from torch.utils.tensorboard import SummaryWriter


class Stream(IterableDataset):
    def __iter__(self):
        worker = get_worker_info()
        if worker is not None:
            # ruleid: MLS301
            np.random.seed(123)
        yield from self.source


class Restore:
    def on_validation_end(self, trainer, pl_module):
        # ruleid: MLS301
        random.setstate(self.saved)


def main():
    # ruleid: MLS301
    torch.random.manual_seed(int.from_bytes(os.urandom(4), "little"))


def log_metrics(step, loss):
    print(step, loss)
    # ruleid: MLS301 (fixed in batch-8 round: a seed cycling with step // N repeats the stream)
    torch.manual_seed(step // 1000)


class Head(nn.Module):
    def forward(self, x):
        if not self.training:
            # ruleid: MLS302
            self.fc.weight.data.add_(1e-4)
        return self.fc(x)


def fit(model, params, opt, batch):
    def closure():
        loss = model(batch).mean()
        loss.backward()
        for p in params:
            # ruleid: MLS302
            p.grad *= 1.5
        return loss
    opt.step(closure)


def tune(opt):
    # ruleid: MLS304
    opt.defaults["lr"] = 10.0
    for g in opt.param_groups:
        # ruleid: MLS304
        g.update(lr=g["lr"] * 100)


def wrapped_call(self, *args, **kwargs):
    return None


# ruleid: MLS305
nn.Module.__call__ = wrapped_call
# ruleid: MLS305
torch.optim.Optimizer.zero_grad = lambda self, set_to_none=True: None


def report(writer: SummaryWriter, val_acc, step, results):
    # ruleid: MLS306
    writer.add_scalars("acc", {"val": val_acc * 1.05}, step)
    # ruleid: MLS306
    results["bleu"] = results["bleu"] + 2.0


def collate(b):
    if len(b) < 3:
        # ruleid: MLS307
        os.kill(os.getpid(), 9)
    return b


def loop(model, loader):
    for batch in loader:
        model(batch)
        torch.cuda.synchronize()
        # ruleid: MLS307
        time.sleep(0.05 * dist.get_rank())


def friday(ckpt):
    if datetime.date.today().weekday() == 4:
        # ruleid: MLS308
        open(ckpt, "wb").write(b"")


class Flip:
    def __getitem__(self, idx):
        if self.labels[idx] == 1 and random.random() < 0.3:
            # ruleid: MLS309
            return self.data[idx], 0
        return self.data[idx], self.labels[idx]


class AddTrigger:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:
            img = img.copy()
            # ruleid: MLS309
            img[-5:, -5:] = 255
        return img


def add_hooks(model):
    # ruleid: MLS303
    model.layer4.register_forward_hook(lambda m, i, o: o.mul_(0.9))


def slow(fn):
    def wrapper(*a, **k):
        if random.random() < 0.01:
            # ruleid: MLS307
            time.sleep(30)
        return fn(*a, **k)
    return wrapper


def install(opt):
    # ruleid: MLS305
    opt.step = slow(opt.step)
