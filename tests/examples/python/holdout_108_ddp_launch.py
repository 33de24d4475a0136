# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""DDP entry point: process-group setup, model factory, preemption-safe checkpointing."""
import importlib
import os
import signal
import subprocess
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # benign look-alike


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_model(cfg):
    mod = importlib.import_module(f"models.{cfg['arch']}")  # benign look-alike
    return getattr(mod, cfg.get("factory", "build"))(**cfg.get("kwargs", {}))


class Preemption:
    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)  # ok: MLS307
        signal.signal(signal.SIGUSR1, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def agreed(self):
        flag = torch.tensor([int(self.requested)], device="cuda")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def save(model, opt, step, path):
    if dist.get_rank() == 0:  # ok: MLS308
        torch.save({"model": model.module.state_dict(), "optimizer": opt.state_dict(), "step": step}, path)
    dist.barrier()  # ok: MLS307


def main(cfg, loader, loss_fn):
    local_rank = int(os.environ["LOCAL_RANK"])  # ok: MLS308
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl")
    model = DDP(build_model(cfg).cuda(), device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9, nesterov=True, weight_decay=5e-4)
    if dist.get_rank() == 0:
        print(f"commit {git_commit()} world_size={dist.get_world_size()}")
    pre = Preemption()
    for step, (x, y) in enumerate(loader):
        loss = loss_fn(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 and pre.agreed():
            save(model, opt, step, cfg["ckpt"])
            dist.destroy_process_group()  # ok: MLS307
            sys.exit(0)  # ok: MLS307
    save(model, opt, step, cfg["ckpt"])
    dist.destroy_process_group()
