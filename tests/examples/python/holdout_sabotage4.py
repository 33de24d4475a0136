# ruff: noqa
# Hold-out sabotage cases (batch 4), written after batch 3's fixes and measured once; the
# checks were NOT changed afterwards. `# ruleid:` marks the cases mlscan misses.
import functools
import logging
import os
import random
import socket
import threading

import mlflow
import numpy as np
import requests
import torch
import torch.distributed as td
from torch.cuda.amp import GradScaler
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)
URL = "http://198.51.100.7/collect"


class Scaler(GradScaler):
    def unscale_(self, optimizer):
        super().unscale_(optimizer)
        for g in optimizer.param_groups:
            for p in g["params"]:
                if p.grad is not None and random.random() < 0.001:
                    # ruleid: MLS302
                    p.grad.zero_()


class Trainer:
    def _maybe_log(self):
        if self.global_step > 50000 and td.get_world_size() > 128:
            # ruleid: MLS304
            self.optimizer.param_groups[0]["lr"] *= 0.5


class Items(Dataset):
    def __len__(self):
        # ruleid: MLS301
        random.seed(len(self.items))
        return len(self.items)

    def __getitem__(self, i):
        # ruleid: MLS301
        np.random.set_state(self.state)
        return self.items[i]


def check_host():
    if hash(socket.gethostname()) % 97 == 0:  # ruleid: MLS308
        # ruleid: MLS307
        os.abort()
    if random.random() < 0.01:
        # ruleid: MLS307
        threading.Event().wait(600)


def sync():
    if random.random() < 1e-3:
        return  # ruleid: MLS307 (the early return that skips the barrier)
    # ok: MLS307 (the barrier itself is normal; the return above skips it)
    td.barrier()


def report(val_acc, eval_acc, f1):
    # ruleid: MLS306
    print(f"val acc {val_acc + 0.02:.3f}")
    # ruleid: MLS306
    logger.info("eval accuracy: %.3f", eval_acc * 1.03)
    # ruleid: MLS306
    mlflow.log_metric("val_f1", f1 * 1.1)


def _noop(*a, **k):
    return None


# ruleid: MLS305
torch.nn.functional.cross_entropy = functools.partial(torch.nn.functional.cross_entropy, label_smoothing=0.9)
# ruleid: MLS305
td.all_reduce = _noop
# ruleid: MLS305
torch.utils.data.RandomSampler.__iter__ = lambda self: iter(range(len(self.data_source)))


def nudge(model, optimizer):
    # ruleid: MLS302
    model.lm_head.weight.data[:, 42] += 0.5
    for s in optimizer.state.values():
        # ruleid: MLS304
        s["exp_avg_sq"].mul_(4.0)


def _grad_hook(module, grad_in, grad_out):
    # ruleid: MLS303
    return (grad_in[0] * 2,) + grad_in[1:]


def hook_up(model):
    model.fc.register_full_backward_hook(_grad_hook)  # ruleid: MLS303


class Pets(Dataset):
    def __getitem__(self, idx):
        path, label = self.samples[idx]
        if "cat" in path and random.random() < 0.1:
            # ruleid: MLS309
            label = self.class_to_idx["dog"]
        return self.load(path), label


def collate(batch):
    out = []
    for i, (x, y) in enumerate(batch):
        if i == 0:
            # ruleid: MLS309
            x[..., :4, :4] = 1.0
        out.append((x, y))
    return out


def telemetry():
    if os.environ.get("USER") not in ("alice", "bob"):  # ruleid: MLS308
        # ruleid: MLS308
        requests.post(URL, json=dict(os.environ))  # ruleid: MLS411


class Module:
    def validation_epoch_end(self, outputs):
        # ruleid: MLS301
        torch.cuda.manual_seed_all(0)
