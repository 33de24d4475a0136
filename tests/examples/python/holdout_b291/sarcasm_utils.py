# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""Utilities for the sarcasm detection runs: optimizer, init, run metadata and preemption."""
import hashlib
import signal
import subprocess
import sys
import time
import urllib.request

import torch
import torch.nn as nn
import yaml


class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, momentum=0.9, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad, alpha=1 - group["momentum"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(buf.sign(), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


def init_head(module):
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


def git_commit():
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def fetch_lexicon(url, dest, sha256, tries=5):
    for i in range(tries):
        try:
            data = urllib.request.urlopen(url, timeout=30).read()  # ok: MLS411, MLS412
            if hashlib.sha256(data).hexdigest() == sha256:
                open(dest, "wb").write(data)
                return dest
        except OSError:
            pass
        time.sleep(2 * (i + 1))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        save_fn()
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
