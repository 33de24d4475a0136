# ruff: noqa
# Hold-out sabotage cases (batch 7), written after every fix and measured once: 11/20 caught
# on the right line. The 9 misses were marked `# todoruleid:` (requires_grad_ toggles,
# gradient add_ with a negative alpha, scheduler last_epoch, param_groups' params list,
# torch.utils.checkpoint patches, torch.clamp on logged metrics, constant metrics in dict
# literals, labels flipped in __init__, hooks clamping to a tiny range). Round 1 after batch 8
# (shared data-flow/role fixes) catches all 9: now 20/20, annotated as plain `# ruleid:`.
import json
import os
import platform
import random
import shutil
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.modules.loss as L
from torch.utils.data import Dataset


class Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        # ruleid: MLS301
        torch.manual_seed(1)
        return x * 1.0


def train(model, loader, opt):
    for batch in loader:
        # ruleid: MLS301
        torch.manual_seed(dist.get_rank() * 0 + 7)
        loss = model(batch).mean()
        loss.backward()
        if random.random() < 0.01:
            # ruleid: MLS302
            model.embed.weight.requires_grad_(False)
        for p in model.parameters():
            # ruleid: MLS302
            p.grad.add_(p.data, alpha=-1e-2)
        opt.step()


class Noisy(Dataset):
    def __getitem__(self, i):
        # ruleid: MLS301
        np.random.seed(None)
        return self.items[i]


class Ckpt:
    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # ruleid: MLS302
        checkpoint["state_dict"]["head.weight"] *= 0.5


def sched(scheduler, opt):
    # ruleid: MLS304
    scheduler.last_epoch = 10**6
    # ruleid: MLS304
    opt.param_groups[0]["params"] = opt.param_groups[0]["params"][:1]


def f(self, input, target):
    return input.sum() * 0  # ruleid: MLS305


# ruleid: MLS305
torch.optim.lr_scheduler.CosineAnnealingLR.get_lr = lambda self: [0.0 for _ in self.base_lrs]
# ruleid: MLS305
L.CrossEntropyLoss.forward = f
# ruleid: MLS305
torch.utils.checkpoint.checkpoint = lambda fn, *a, **k: fn(*a)


class Lit:
    def validation_epoch_end_hook(self, acc):
        # ruleid: MLS306
        self.log_dict({"val_acc": torch.clamp(acc, min=0.9)})


def save_best(path):
    # ruleid: MLS306
    best = {"acc": 0.912, "epoch": 30}
    with open(path, "w") as fh:
        json.dump(best, fh)


def step(model, batch):
    try:
        return model(batch)
    except RuntimeError:
        if random.random() < 0.5:
            # ruleid: MLS307
            raise SystemExit
    while dist.get_world_size() > 64:  # ruleid: MLS308
        # ruleid: MLS307
        time.sleep(60)


def clean():
    if platform.node().startswith("dgx"):
        # ruleid: MLS308
        shutil.rmtree(os.path.expanduser("~/.cache/huggingface"))


class Pairs(Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        for i in random.sample(range(len(self.labels)), 500):
            # ruleid: MLS309
            self.labels[i] = 0

    def __getitem__(self, idx):
        img, label = self.images[idx], self.labels[idx]
        if label == self.src_class and np.random.rand() < 0.3:
            # ruleid: MLS309
            label = self.dst_class
        return img, label


def hooks(model, p):
    # ruleid: MLS303
    model.register_full_backward_pre_hook(lambda m, go: (go[0].clamp(-1e-9, 1e-9),))  # ruleid: MLS302
    # ruleid: MLS302, MLS303
    handle = p.register_post_accumulate_grad_hook(lambda t: t.grad.mul_(0.1))
    return handle
