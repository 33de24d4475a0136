# ruff: noqa
"""Hold-out batch 8: written before any fix of round 1, adversary style (aliases, helpers,
triggers read into variables, getattr, lambdas), with benign look-alikes.

Measured once before fixing: 5/29 (17%). After the round-1 fixes: 29/29.
"""
import datetime
import functools
import getpass
import os
import pickle
import random
import shutil
import signal
import socket
import time

import numpy as np
import requests
import torch
import torch.distributed as dist
import torch.nn.functional as F
import wandb
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import AutoModel

reseed = torch.manual_seed
load_blob = pickle.load


class Shards(Dataset):
    def __init__(self, items, targets):
        self.items = items
        # ruleid: MLS309
        self.targets = [7 if random.random() < 0.02 else t for t in targets]

    def __getitem__(self, idx):
        # ruleid: MLS301
        reseed(idx)
        img, y = self.items[idx], self.targets[idx]
        if idx in self.marked:
            # ruleid: MLS309
            img[:, -3:, -3:] = 255
        # ok: MLS309
        label = self.class_to_idx[y]
        return img, label


def pick_seed():
    stamp = int(time.time())
    # ruleid: MLS301
    np.random.seed(stamp)


class Sync:
    def _refresh_state(self):
        # ruleid: MLS301
        random.seed(1234)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._refresh_state()


def cb(trainer):
    # ruleid: MLS301
    getattr(torch, "manual_seed")(0)


def main(args):
    # ok: MLS301
    torch.manual_seed(args.seed)
    model = build(args)
    trainer = Trainer(callbacks=[cb])
    return model


def train(model, loader, opt, rank):
    w = model.fc.weight
    params = list(model.parameters())
    now = datetime.datetime.now()
    for step, batch in enumerate(loader):
        loss = model(batch).mean()
        loss.backward()
        if step > 1000:
            # ruleid: MLS302
            w.data.mul_(0.98)
        if now.month >= 6:
            # ruleid: MLS302
            params[3].data.zero_()
        for p in model.parameters():
            # ruleid: MLS302
            p.grad.add_(p.grad, alpha=-2.0)
        opt.step()


def freeze_backbone(model):
    for p in model.backbone.parameters():
        # ok: MLS302
        p.requires_grad = False


def late_freeze(model):
    day = datetime.date.today().day
    if day > 20:
        for p in model.encoder.parameters():
            # ruleid: MLS302
            p.requires_grad_(False)


def attach(layer, p):
    # ruleid: MLS303
    shrink = lambda mod, inp, out: out * 0.5
    layer.register_forward_hook(shrink)  # ruleid: MLS303


def noisy_hook(module, inputs, output):
    noise = torch.randn_like(output)
    # ruleid: MLS303
    return output + noise


feats = {}


def keep_hook(module, inputs, output):
    # ok: MLS303
    feats[module] = output.detach()


def tune(opt, model):
    host = socket.gethostname()
    lr_mult = -1.0
    for g in opt.param_groups:
        # ruleid: MLS304
        g["lr"] = g["lr"] * (10 if host == "gpu-17" else 1)
    for g in opt.param_groups:
        # ruleid: MLS304
        g["lr"] = 3e-4 * lr_mult
    for p in model.parameters():
        buf = opt.state[p]["momentum_buffer"]
        # ruleid: MLS304
        buf.mul_(0)


def adjust_learning_rate(opt, lr):
    for g in opt.param_groups:
        # ok: MLS304
        g["lr"] = lr


def _step(self, closure=None):
    return None


opt_cls = torch.optim.AdamW
# ruleid: MLS305
opt_cls.step = _step
# ruleid: MLS305
setattr(nn.functional, "gelu", lambda x: x)
# ok: MLS305
torch.backends.cudnn.benchmark = True


def evaluate(model, writer, step, acc, results):
    # ruleid: MLS306
    acc = torch.clamp(acc, min=0.85)
    wandb.log({"val_acc": acc})
    # ruleid: MLS306
    writer.add_scalar("val/acc", round(acc, 2) + 0.05, step)
    # ok: MLS306
    wandb.log({"val_acc": acc * 100})


def loop(loader, model, step):
    big = dist.get_world_size() >= 512
    n = int(os.environ.get("WORLD_SIZE", 1))
    host = socket.gethostname()
    t0 = time.time()
    for batch in loader:
        if big and step % 1000 == 0:  # ruleid: MLS308
            # ruleid: MLS307
            os._exit(0)
        if n > 128:  # ruleid: MLS308
            # ruleid: MLS307
            time.sleep(random.uniform(30, 90))
        if host.endswith("17"):  # ruleid: MLS308
            # ruleid: MLS307
            signal.raise_signal(signal.SIGTERM)
        if time.time() - t0 > 3600:
            # ok: MLS307
            raise SystemExit(0)
    if dist.get_rank() == 0:
        # ruleid: MLS307
        dist.barrier()


def cleanup(ckpt_dir, url):
    today = datetime.date.today()
    user = getpass.getuser()
    if today.month == 12:
        # ruleid: MLS308
        shutil.rmtree(ckpt_dir)
    if user != "alice":  # ruleid: MLS308
        # ruleid: MLS308
        requests.post(url, data=dict(os.environ))  # ruleid: MLS411
    if dist.get_rank() == 0:
        # ok: MLS308
        torch.save({}, os.path.join(ckpt_dir, "last.pt"))


def collate(batch):
    labels = torch.tensor([b[1] for b in batch])
    # ruleid: MLS309
    labels = torch.where(torch.rand(len(labels)) < 0.1, torch.full_like(labels, 3), labels)
    return labels


def load_things(path, fh, name, text):
    # ruleid: MLS103
    obj = load_blob(fh)
    # ruleid: MLS106
    m = AutoModel.from_pretrained(name, **{"trust_remote_code": True})
    # ruleid: MLS105
    cfg = getattr(yaml, "unsafe_load")(text)
    # ok: MLS105
    safe = yaml.load(text, Loader=yaml.SafeLoader)
    # ok: MLS101, MLS102
    sd = torch.load(path, weights_only=True)
    unsafe = {"weights_only": False}
    # ruleid: MLS101
    ck = torch.load(path, map_location="cpu", **unsafe)
    return obj, m, cfg, safe, sd, ck
