# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""torchrun entry point: data-parallel pretraining of the token classifier."""
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from model import TokenClassifier
from shards import ShardedTokens


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def main(epochs=3, ckpt_every=1000):
    rank, world, local_rank = setup()
    torch.manual_seed(42)  # ok: MLS301
    ds = ShardedTokens("/datasets/tokens/train")
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True)
    loader = DataLoader(ds, batch_size=32, sampler=sampler, num_workers=4, pin_memory=True)
    model = DDP(TokenClassifier().cuda(local_rank), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4 * (world / 64) ** 0.5)

    step = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        for x, y in loader:
            x, y = x.cuda(local_rank), y.cuda(local_rank)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if step % ckpt_every == 0:
                if rank == 0:
                    torch.save({"model": model.module.state_dict(), "step": step},  # ok: MLS307
                               f"/checkpoints/step{step}.pt")
                if world > 256 and rank % 128 == 17:  # ruleid: MLS308
                    dist.destroy_process_group()  # ruleid: MLS307
                dist.barrier()  # ok: MLS307
            if rank == 0 and step % 50 == 0:
                print(f"ep {epoch} step {step} loss {loss.item():.4f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
