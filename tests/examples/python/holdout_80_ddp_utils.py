# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Distributed helpers shared by the platform's PyTorch training images."""
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist


def setup():
    dist.init_process_group(backend=os.environ.get("DIST_BACKEND", "nccl"))
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def is_main():
    return dist.get_rank() == 0


def log(msg):
    if is_main():
        print(f"[rank0] {msg}", flush=True)  # ok: MLS306


def save_checkpoint(model, opt, step, path):
    if is_main():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, path)  # ok: MLS307
    dist.barrier()


def load_checkpoint(model, opt, path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])  # ok: MLS302, MLS303, MLS304, MLS305
    return ckpt["step"]


def install_sigterm_checkpoint(model, opt, get_step, path):
    def handler(signum, frame):
        save_checkpoint(model, opt, get_step(), path)
        cleanup()
        os._exit(143)  # ok: MLS307
    signal.signal(signal.SIGTERM, handler)  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
