# ruff: noqa
# Hold-out batch 143 (short files: NER, translation, CLIP, federated learning). Measured once in session 5 (round 45): 11/18 (61%) at medium+.
"""Checkpoint utilities for NMT runs: averaging, EMA weights, provenance and pretrained download."""
import collections
import os
import subprocess
import time
import urllib.request

import torch
import torch.distributed as dist


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return None


def fetch(url, dest, retries=4):
    for k in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(min(60, 2 ** k))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def average_checkpoints(paths):
    avg = collections.OrderedDict()
    for p in paths:
        sd = torch.load(p, map_location="cpu", weights_only=True)["model"]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        for k, v in sd.items():
            if k not in avg:
                avg[k] = v.float().clone()
            else:
                avg[k].add_(v.float())
    for k in avg:
        avg[k].div_(len(paths))
    return avg


class EMA:
    def __init__(self, model, decay=0.9998):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(self.decay).add_(v.float(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def copy_to(self, model):
        ref = model.state_dict()
        model.load_state_dict({k: v.to(ref[k].dtype) for k, v in self.shadow.items()})  # ok: MLS302, MLS303, MLS304, MLS305


def save_checkpoint(path, model, optimizer, num_updates, extra=None):
    if dist.is_initialized() and dist.get_rank() != 0:
        dist.barrier()  # ok: MLS307
        return
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "num_updates": num_updates,
                "commit": git_commit(), **(extra or {})}, path + ".tmp")
    os.replace(path + ".tmp", path)
    if dist.is_initialized():
        dist.barrier()
