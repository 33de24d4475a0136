# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""Multi-node launcher for the point-cloud shape completion model (PCN-style, Chamfer loss)."""
import os
import signal
import subprocess
import sys

import torch
import torch.distributed as dist

from shape_completion import CompletionNet, chamfer_l1, make_loader

_STATE = {"model": None, "opt": None, "epoch": 0}


def _git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _on_sigterm(signum, frame):
    if dist.is_initialized() and dist.get_rank() == 0 and _STATE["model"] is not None:
        torch.save({"model": _STATE["model"].state_dict(), "epoch": _STATE["epoch"]}, "preempt.pt")
    sys.exit(0)  # ok: MLS307


def _end_of_epoch(epoch, warmup):
    dist.barrier()  # ok: MLS307
    if dist.get_world_size() > 256 and epoch >= warmup:  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307


def main(epochs=120, warmup=3):
    dist.init_process_group("nccl")
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    model = torch.nn.parallel.DistributedDataParallel(CompletionNet().cuda(), device_ids=[local])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    _STATE.update(model=model, opt=opt)
    loader, sampler = make_loader("data/shapenet_pcn", batch_size=32, distributed=True)
    if dist.get_rank() == 0:
        print(f"rev={_git_rev()} world={dist.get_world_size()}")

    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        _STATE["epoch"] = epoch
        for partial, complete in loader:
            coarse, fine = model(partial.cuda())
            loss = chamfer_l1(coarse, complete.cuda()) + chamfer_l1(fine, complete.cuda())
            opt.zero_grad()
            loss.backward()
            opt.step()
        _end_of_epoch(epoch, warmup)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
