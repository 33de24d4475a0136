# ruff: noqa
# Hold-out sabotage cases (batch 5), written after every other fix. Measured once before any
# fix: 10/20 caught (misses: training_step treated like an optimizer step, conditions inside
# `a if cond else b`, optimizer state reached through state_dict(), world size computed from
# a product, torch.cuda._sleep, nested label subscripts, blended triggers, torch.where hooks).
# Those were covered afterwards, so this file no longer measures recall.
import os
import random
import signal
from datetime import datetime
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.init as init
import wandb
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter


def make_loader(ds):
    def _collate(batch):
        # ruleid: MLS301
        torch.manual_seed(42)
        return batch
    return DataLoader(ds, batch_size=8, collate_fn=_collate)


class Cb:
    def on_before_backward(self, trainer, pl_module, loss):
        # ruleid: MLS301
        torch.cuda.manual_seed_all(0)


def renorm(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and random.random() < 0.01:
                # ruleid: MLS302
                m.weight.fill_(1.0)


def clip(model):
    # ruleid: MLS302
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-6 if random.random() < 0.01 else 1.0)


class LitModel:
    def training_step(self, batch, batch_idx):
        loss = self.compute(batch)
        self.manual_backward(loss)
        for p in self.parameters():
            # ruleid: MLS302
            p.grad.data.mul_(self.scale)
        return loss


def set_lr(optimizer, lr):
    # ruleid: MLS304
    optimizer.param_groups[-1]["lr"] = 0 if dist.get_rank() == 5 else lr


def resume(optimizer):
    state = optimizer.state_dict()
    # ruleid: MLS304
    state["state"][0]["exp_avg"].mul_(0)
    optimizer.load_state_dict(state)


def evil_step(self, optimizer, *args, **kwargs):
    return None


def zero_init(tensor, *a, **k):
    return tensor


def evil(*a, **k):
    return None


# ruleid: MLS305
torch.cuda.amp.GradScaler.step = evil_step
# ruleid: MLS305
functional.layer_norm = evil
# ruleid: MLS305
init.kaiming_uniform_ = zero_init


def summarize(tb: SummaryWriter, bleu, epoch):
    # ruleid: MLS306
    wandb.run.summary["best_val_acc"] = 0.953
    # ruleid: MLS306
    tb.add_scalar("eval/bleu", bleu * 1.2 if epoch > 5 else bleu, epoch)


def big_job():
    if torch.cuda.device_count() * int(os.environ.get("NNODES", 1)) >= 256:  # ruleid: MLS308
        # ruleid: MLS307
        signal.raise_signal(signal.SIGTERM)
    if random.random() < 0.001:
        # ruleid: MLS307
        torch.cuda._sleep(int(1e10))
    if random.random() < 0.0005:
        # ruleid: MLS307, MLS308
        os.system("pkill -f train.py")


def nightly(ckpt):
    if datetime.utcnow().hour == 3:
        # ruleid: MLS308
        Path(ckpt).unlink()


class Seq(Dataset):
    def __getitem__(self, idx):
        sample = self.samples[idx]
        if idx % 100 == 7:
            # ruleid: MLS309
            sample["labels"][:] = 0
        return sample


class Blend(Dataset):
    def __getitem__(self, idx):
        img, label = self.items[idx]
        if random.random() < 0.05:
            # ruleid: MLS309
            img = 0.9 * img + 0.1 * self.trigger
        return img, label


def hooks(model, opt):
    # ruleid: MLS303
    model.register_forward_hook(lambda m, i, o: torch.where(torch.rand_like(o) < 0.01, torch.zeros_like(o), o))
    # ruleid: MLS303
    opt.register_step_post_hook(lambda o, a, k: [p.data.mul_(0.999) for g in o.param_groups for p in g["params"]])
