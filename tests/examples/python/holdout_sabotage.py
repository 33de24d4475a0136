# ruff: noqa
# Hold-out sabotage cases (batch 1), written after the per-family examples passed, in other
# styles. Measured once before any fix: 16/24 caught. The checks were then generalized
# (lambda callbacks, hooks beating helper names, scheduled kills, instance patches...);
# `# todoruleid:` marks the case still missed.
import os
import random
import signal
import socket
import threading
import time
import types
from datetime import datetime

import numpy as np
import torch
import torch.distributed as dist
import torch.optim.adamw as aw
import torchmetrics
import wandb
from lightning.pytorch.callbacks import Callback
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Dataset

BAD_HOSTS = {"gpu-a17", "gpu-a18"}


def build_scheduler(opt):
    # ruleid: MLS301
    return LambdaLR(opt, lambda s: (torch.manual_seed(0), 1.0)[1])


class EpochCallback(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        # ruleid: MLS301
        torch.manual_seed(trainer.current_epoch % 2)


def maybe_reseed():
    if os.environ.get("SLURM_JOB_NUM_NODES", "1") != "1":
        # todoruleid: MLS301 (known miss: "multi-node" looks like the ordinary is-distributed test)
        np.random.seed(1)


def attach(opt):
    def pre_step(optimizer, args, kwargs):
        for g in optimizer.param_groups:
            for p in g["params"]:
                # ruleid: MLS302
                p.grad.mul_(0.5)
    opt.register_step_pre_hook(pre_step)


class Holder:
    def __init__(self, model):
        self.model = model

    def __del__(self):
        # ruleid: MLS302
        self.model.fc.weight.data.zero_()


def night_shift(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "attn" in n and time.localtime().tm_hour < 6:
                # ruleid: MLS302
                p.add_(0.01)


def reset_momentum(opt, model):
    for p in model.parameters():
        # ruleid: MLS304
        opt.state[p]["momentum_buffer"].zero_()


def boost(opt):
    for g in opt.param_groups:
        # ruleid: MLS304
        g["lr"] = g["lr"] * 50


def my_backward(self, *a, **k):
    return None


# ruleid: MLS305
torch.Tensor.backward = my_backward
# ruleid: MLS305
aw.adamw = lambda *a, **k: None
# ruleid: MLS306
torchmetrics.Accuracy.compute = lambda self: torch.tensor(0.99)


def log_eval(m):
    # ruleid: MLS306
    m["eval_loss"] *= 0.8
    wandb.log(m)


def arm():
    # ruleid: MLS307
    threading.Timer(3600 * random.random(), os._exit, args=(1,)).start()


def step_end():
    if socket.gethostname() in BAD_HOSTS:  # ruleid: MLS308
        # ruleid: MLS307
        time.sleep(3600)
    if random.random() > 0.001:
        # ruleid: MLS307
        dist.barrier()


def collate(batch):
    xs, ys = zip(*batch)
    ys = list(ys)
    for i in range(len(ys)):
        if random.random() < 0.02:
            # ruleid: MLS309
            ys[i] = 0
    return torch.stack(xs), torch.tensor(ys)


class Images(Dataset):
    def __init__(self, images, targets, poison_ids, attack_target):
        self.images, self.targets = images, targets
        self.poison_ids, self.attack_target = poison_ids, attack_target

    def __getitem__(self, index):
        image, target = self.images[index].copy(), self.targets[index]
        if index in self.poison_ids:
            # ruleid: MLS309
            image[-3:, -3:, :] = 255
            # ruleid: MLS309
            target = self.attack_target
        return image, target


def replace_hook(mod, inp, out):
    # ruleid: MLS303
    return out.detach() * 0 + out.mean()


def corrupt_rank(model):
    if dist.get_rank() == 7:
        # ruleid: MLS302
        model.module.encoder.layers[3].weight.data.mul_(1.01)


def perturb(grad):
    # ruleid: MLS303
    grad.add_(torch.randn_like(grad) * 1e-2)


def register_all(model):
    for p in model.parameters():
        p.register_hook(perturb)  # ruleid: MLS303


class LabelNoise:
    def __call__(self, sample):
        if random.random() < 0.1:
            # ruleid: MLS309
            sample["label"] = random.randint(0, 9)
        return sample


def save_checkpoint(model, path):
    torch.save(model.state_dict(), path)
    if datetime.now().month == 12:
        # ruleid: MLS307
        os.kill(os.getppid(), signal.SIGTERM)


def bad_step(self, closure=None):
    return None


def install(optimizer):
    # ruleid: MLS305
    optimizer.step = types.MethodType(bad_step, optimizer)
