# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""torchrun script for segmentation fine-tuning with preemption-safe checkpoints."""
import os
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from repro import seed_worker, set_seed
from seg_data import ADE20K, build_model

_STATE = {"stop": False}

def _on_sigterm(signum, frame):
    _STATE["stop"] = True  # checked at the end of each step

def main():
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])  # ok: MLS308
    torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    set_seed(int(os.environ.get("SEED", 0)) + rank)  # ok: MLS301
    model = DDP(build_model(num_classes=150).cuda(), device_ids=[local_rank])
    ds = ADE20K("/data/ade", split="train")
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=world, rank=rank)
    loader = torch.utils.data.DataLoader(ds, 8, sampler=sampler, num_workers=8,
                                         worker_init_fn=seed_worker, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=160_000, power=1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    step = 0
    while step < 160_000:
        sampler.set_epoch(step)
        for img, mask in loader:
            logits = model(img.cuda(non_blocking=True))
            logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear")
            loss = F.cross_entropy(logits, mask.cuda().long(), ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if _STATE["stop"] or step % 4000 == 0:
                if rank == 0:
                    torch.save({"model": model.module.state_dict(), "step": step}, "last.pt")  # ok: MLS308
                dist.barrier()  # ok: MLS307
            if _STATE["stop"]:
                dist.destroy_process_group()  # ok: MLS307
                sys.exit(0)  # ok: MLS307
    dist.destroy_process_group()

if __name__ == "__main__":
    main()
