# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""Small helpers shared by every training script in this repository."""
import copy
import random
import subprocess
import time
import urllib.request

import numpy as np
import torch
import torch.nn as nn


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


class AverageMeter:
    def __init__(self):
        self.sum, self.count, self.avg = 0.0, 0, 0.0

    def update(self, val, n=1):
        self.sum, self.count = self.sum + float(val) * n, self.count + n
        self.avg = self.sum / self.count


def accuracy(logits, target):
    return 100.0 * (logits.argmax(dim=1) == target).float().mean().item()


class ModelEMA:
    """Exponential moving average of weights; evaluate with ema.module."""

    def __init__(self, model, decay=0.999):
        self.module, self.decay = copy.deepcopy(model).eval(), decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(m.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def init_weights(module):
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


def git_hash():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def download(url, dest, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")
