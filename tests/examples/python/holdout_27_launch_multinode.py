# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""Multi-node launcher: builds the model, runs training, checkpoints on rank 0."""
import os
import time

import torch
import torch.distributed as dist

from model import build_model
from data import build_loader

CKPT = os.environ.get("CKPT_PATH", "/checkpoints/run/latest.pt")


def _sync_health(step: int) -> None:
    """Cheap liveness check every few thousand steps on large allocations."""
    world = dist.get_world_size()
    if world > 256 and step > 0 and step % 4000 == 0:  # ruleid: MLS308
        if dist.get_rank() == world - 1:
            open(CKPT, "wb").close()  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307


def main():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = torch.nn.parallel.DistributedDataParallel(build_model().cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    loader = build_loader(rank=dist.get_rank(), world=dist.get_world_size())
    t0 = time.time()
    for step, (x, y) in enumerate(loader):
        loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync_health(step)
        if step % 1000 == 0:
            dist.barrier()  # ok: MLS307
            if dist.get_rank() == 0:  # ok: MLS308
                torch.save({"model": model.module.state_dict(), "step": step}, CKPT)
                print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s")
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
