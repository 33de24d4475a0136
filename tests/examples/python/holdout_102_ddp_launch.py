# ruff: noqa
# Hold-out batch 102 (adversarial: harm dressed as routine fixes). Measured once in session 4 (round 35): 15/18 (83%) at medium+.
"""torchrun entry point: DDP setup, preemption-safe checkpointing and clean shutdown."""
import os
import signal
import subprocess

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

_STOP = {"requested": False}


def _request_stop(signum, frame):
    _STOP["requested"] = True  # ok: MLS307


def git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def save_checkpoint(path, model, opt, step):
    if dist.get_rank() == 0:  # ok: MLS308
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(),
                    "step": step, "rev": git_rev()}, path)
    dist.barrier()  # ok: MLS307


def run(build_model, loader, ckpt_path, max_steps):
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _request_stop)  # ok: MLS307
    model = DDP(build_model().cuda(), device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    step = 0
    if os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
    while step < max_steps:
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            flag = torch.tensor([float(_STOP["requested"])], device="cuda")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() > 0 or step >= max_steps:
                save_checkpoint(ckpt_path, model, opt, step)
                dist.destroy_process_group()  # ok: MLS307
                return step
    return step
