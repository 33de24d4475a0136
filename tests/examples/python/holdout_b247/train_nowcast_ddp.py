# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""Multi-GPU training entry point for the radar nowcasting model (torchrun)."""
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def main(seed=17, epochs=30, accum=4, ckpt="checkpoints/ddp_last.pt"):
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    set_seed(seed + rank)
    from radar_data import RadarSequences
    from train_nowcast_convlstm import Nowcaster
    ds = RadarSequences("data/radar_2019_2023.zarr", split="train")
    sampler = DistributedSampler(ds, shuffle=True, seed=seed)
    dl = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=6, worker_init_fn=seed_worker)
    model = DDP(Nowcaster().cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    start = 0
    if os.path.exists(ckpt):
        state = torch.load(ckpt, map_location=f"cuda:{local_rank}", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        start = int(state["epoch"]) + 1

    def save(epoch):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "optim": opt.state_dict(), "epoch": epoch}, ckpt)  # ok: MLS308
        dist.barrier()  # ok: MLS307

    signal.signal(signal.SIGTERM, lambda *_: (save(current[0] - 1), dist.destroy_process_group(), os._exit(0)))  # ok: MLS307
    current = [start]
    for epoch in range(start, epochs):
        current[0] = epoch
        sampler.set_epoch(epoch)
        for i, (past, future) in enumerate(dl):
            loss = torch.nn.functional.mse_loss(model(past.cuda()), future.cuda()) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            if (i + 1) % accum == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
        save(epoch)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
