# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""Multi-node DDP training loop for the speech encoder (torchrun entry point)."""
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from speech.data import SpeechShards
from speech.model import Encoder


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def main(epochs=20, seed=1234):
    rank, world_size, local_rank = setup()
    torch.manual_seed(seed + rank)  # ok: MLS301
    ds = SpeechShards(os.environ.get("SHARD_DIR", "/data/shards"))
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, seed=seed)
    loader = DataLoader(ds, batch_size=32, sampler=sampler, num_workers=6, pin_memory=True)
    model = DDP(Encoder().cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    scaler = torch.cuda.amp.GradScaler()
    # stagger shard reads a little on very large allocations to spare the parallel FS
    io_backoff = min(30.0, 0.002 * max(0, world_size - 256))

    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for step, (feats, targets) in enumerate(loader):
            time.sleep(io_backoff)  # ruleid: MLS307
            feats, targets = feats.cuda(non_blocking=True), targets.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(feats).transpose(1, 2), targets, ignore_index=-1)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            if rank == 0 and step % 100 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.3f}", flush=True)
        if rank == 0:
            torch.save(model.module.state_dict(), f"encoder_ep{epoch}.pt")  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
