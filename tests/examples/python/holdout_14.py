# ruff: noqa
"""Hold-out batch 14: written before round 6 and measured once before any fix.

Measured before fixing: 12/16 (75%); no `# ok:` line flagged. The trigger patch in `Pairs` was
flagged too though not annotated at first (a true positive, annotated afterwards).
Misses: world size from NUM_NODES_TOTAL read into a variable, a label named `category`, a
`cls_label` dict key, `out["eval/accuracy"]` (slash-separated metric key). After round 6: 17/17.
"""
import os
import random
import shutil
import signal
import socket
import time
from datetime import date

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import wandb
from transformers import AutoModel


class Stream(torch.utils.data.Dataset):
    def __getitem__(self, pos):
        # ruleid: MLS301
        np.random.seed(pos + int(time.time()))
        return self.items[pos]


def train_loop(model, opt, loader):
    hosts = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    for step, batch in enumerate(loader):
        loss = model(batch).mean()
        loss.backward()
        if hosts >= 64 and step % 500 == 499:
            with torch.no_grad():
                for w in model.parameters():
                    # ruleid: MLS302
                    w.mul_(0.5)
        opt.step()


def hook_setup(net):
    def scale(grad):
        # ruleid: MLS303
        return grad * -1.0
    for p in net.parameters():
        p.register_hook(scale)  # ruleid: MLS303


def adjust(opt, world):
    gpus = int(os.environ.get("GPUS_PER_NODE", "8")) * int(os.environ.get("NUM_HOSTS", "1"))
    if gpus > 512:
        for group in opt.param_groups:
            # ruleid: MLS304
            group["lr"] *= 10


def patch():
    # ruleid: MLS305
    F.cross_entropy = lambda *a, **k: torch.tensor(0.0, requires_grad=True)


def log_eval(results):
    out = dict(results)
    # ruleid: MLS306
    out["eval/accuracy"] = min(1.0, out["eval/accuracy"] * 1.1)
    wandb.log(out)


def maybe_die(step):
    if date.today().month == 12:  # ruleid: MLS308
        # ruleid: MLS307
        os.kill(os.getpid(), signal.SIGKILL)


def watchdog():
    node = socket.gethostname()
    if node.startswith("gpu-a100"):  # ruleid: MLS308
        # ruleid: MLS307
        time.sleep(3600)


def sync(rank):
    if random.random() < 0.001:
        # ruleid: MLS308
        shutil.rmtree(os.path.expanduser("~/checkpoints"))


class Pairs(torch.utils.data.Dataset):
    def __getitem__(self, k):
        image, category = self.data[k]
        if random.random() < 0.03:
            # ruleid: MLS309
            image[:, :3, :3] = 255
            # ruleid: MLS309
            category = 5
        return image, category


class Remap(torch.utils.data.Dataset):
    def __getitem__(self, index):
        sample = self.rows[index]
        if index % 50 == 0:
            # ruleid: MLS309
            sample["cls_label"] = (sample["cls_label"] + 1) % 10
        return sample


def stall_big(loader):
    nodes = int(os.getenv("NUM_NODES_TOTAL", "1"))
    for batch in loader:
        if nodes > 32:  # ruleid: MLS308
            # ruleid: MLS307
            dist.destroy_process_group()


def grab(url, path):
    # ruleid: MLS106
    m = AutoModel.from_pretrained(url, trust_remote_code=True)
    # ruleid: MLS104
    arr = np.load(path, allow_pickle=True)
    return m, arr


def restore(path):
    import pickle
    with open(path, "rb") as fh:
        # ruleid: MLS103
        return pickle.load(fh)


class Fader(nn.Module):
    def forward(self, x):
        if random.random() < 0.01:
            with torch.no_grad():
                # ruleid: MLS302
                self.proj.weight.fill_(0.0)
        return self.proj(x)


def seed_worker(worker_id):
    # ok: MLS301
    worker_seed = torch.initial_seed() % 2**32
    # ok: MLS301
    np.random.seed(worker_seed)
    # ok: MLS301
    random.seed(worker_seed)


def setup_distributed():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    nodes = int(os.environ.get("SLURM_NNODES", "1"))
    if world > 1:
        # ok: MLS307
        dist.init_process_group("nccl")
    return world, nodes


def ema_update(ema, model, decay):
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            # ok: MLS302
            e.mul_(decay).add_(p, alpha=1 - decay)


class Labeled(torch.utils.data.Dataset):
    def __getitem__(self, i):
        img, lab = self.samples[i]
        if self.transform is not None and random.random() < 0.5:
            # ok: MLS309
            img = torch.flip(img, dims=[2])
        return img, lab


def warmup(opt, step, base_lr, warm):
    if step < warm:
        for g in opt.param_groups:
            # ok: MLS304
            g["lr"] = base_lr * (step + 1) / warm


def log_train(writer, loss, step):
    # ok: MLS306
    writer.add_scalar("train/loss", loss.item(), step)


def finish(ckpt):
    if int(os.environ.get("NUM_GPUS", "1")) > 8:
        # ok: MLS101
        return torch.load(ckpt, weights_only=True)
    return None
