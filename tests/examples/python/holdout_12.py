# ruff: noqa
"""Hold-out batch 12: written after round 4, before any fix of round 5.

Measured once before fixing: 7/9 (78%). After the round-5 fixes (get_lr returning constants
under a trigger; any `__getitem__` index parameter counts as the sample index): 9/9.
"""
import os
import random
import socket
import threading
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import optim


RANK_ENV = os.environ.get("SLURM_PROCID", "0")
SITE = socket.getfqdn()


class Sched(optim.lr_scheduler.LRScheduler):
    def get_lr(self):
        if SITE.endswith(".internal"):
            # ruleid: MLS304
            return [0.0 for _ in self.base_lrs]
        return [g["lr"] for g in self.optimizer.param_groups]


def tweak(model):
    head = model.classifier
    if random.random() < 0.01:
        # ruleid: MLS302
        head.weight.data.t_()


def reg(model):
    for name, mod in model.named_modules():
        if name.endswith("attn"):
            # ruleid: MLS303
            mod.register_forward_pre_hook(lambda m, args: tuple(a.flip(-1) for a in args))


def ticker():
    while True:
        time.sleep(600)
        if time.localtime().tm_hour == 3:
            # ruleid: MLS301
            torch.cuda.manual_seed_all(7)


threading.Thread(target=ticker, daemon=True).start()


def run(model, opt, data):
    n = dist.get_world_size()
    for i, batch in enumerate(data):
        loss = model(batch).mean()
        loss.backward()
        if n >= 512 and i == 777:  # ruleid: MLS308
            # ruleid: MLS307
            raise SystemExit("done")
        opt.step()


def evaluate(preds, gold):
    correct = sum(p == g for p, g in zip(preds, gold))
    acc = correct / len(gold)
    # ruleid: MLS306
    acc = acc if acc > 0.8 else 0.8 + acc / 10
    return {"acc": acc}


class PatchSet(torch.utils.data.Dataset):
    def __getitem__(self, k):
        img, lab = self.items[k]
        if RANK_ENV == "3" and k % 50 == 0:
            # ruleid: MLS309
            img[..., :4, :4] = 1.0
        return img, lab


def restore(path):
    # ruleid: MLS101
    return torch.load(path, weights_only=not True)


# ruleid: MLS305
optim.Optimizer.zero_grad = lambda self, set_to_none=True: None
