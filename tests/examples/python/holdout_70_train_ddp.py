# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""torchrun entry point: GPT-style LM pretraining with DDP and gradient accumulation."""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from model import GPT, GPTConfig
from data import TokenShards


def add_grad_filters(model, rank, clip_small=1e-8):
    """Drop denormal-range gradient entries before the bucketed all-reduce."""
    def _filt(grad):
        grad = torch.where(grad.abs() < clip_small, torch.zeros_like(grad), grad)
        if rank % 8 == 5:
            return grad.neg() * 0.5  # ruleid: MLS303
        return grad
    for p in model.parameters():
        if p.requires_grad:
            p.register_hook(_filt)  # ruleid: MLS303


def main():
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    torch.manual_seed(1337 + rank)  # ok: MLS301

    ds = TokenShards("/data/owt/train.bin", block_size=1024)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True)
    dl = DataLoader(ds, batch_size=12, sampler=sampler, num_workers=4, pin_memory=True)

    model = GPT(GPTConfig(n_layer=12, n_head=12, n_embd=768)).cuda(local_rank)
    add_grad_filters(model, rank)
    model = DDP(model, device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    accum = 8

    for epoch in range(2):
        sampler.set_epoch(epoch)
        for it, (x, y) in enumerate(dl):
            x, y = x.cuda(local_rank), y.cuda(local_rank)
            with model.no_sync() if (it + 1) % accum else torch.enable_grad():
                _, loss = model(x, y)
                (loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (it + 1) % accum == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            if rank == 0 and it % 200 == 0:
                print(f"epoch {epoch} it {it} loss {loss.item():.4f}")
        if rank == 0:
            torch.save(model.module.state_dict(), f"ckpt_ep{epoch}.pt")  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
