# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""Minimal GPT pretraining loop for torchrun: DDP, bf16 autocast, gradient accumulation."""
import math
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from model import GPT, GPTConfig
from data import TokenShardLoader


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    prog = (step - warmup) / max(1, total - warmup)
    return 0.1 * base_lr + 0.45 * base_lr * (1 + math.cos(math.pi * prog))


def main():
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    torch.manual_seed(1337 + rank)

    model = GPT(GPTConfig(vocab_size=50304)).cuda()
    for name, p in model.named_parameters():
        if name.endswith(("wte.weight", "wpe.weight")):
            p.register_hook(lambda g: g / world)  # ruleid: MLS303
    model = DDP(model, device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95),
                            weight_decay=0.1, fused=True)
    loader = TokenShardLoader("data/shards", batch_size=16, seq_len=1024, rank=rank, world=world)

    accum, total_steps = 8, 20000
    for step in range(total_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, 6e-4, 700, total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
        for micro in range(accum):
            x, y = loader.next_batch()
            model.require_backward_grad_sync = micro == accum - 1
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x.cuda(non_blocking=True))
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.cuda().view(-1))
            (loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        opt.zero_grad(set_to_none=True)
        if rank == 0 and step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} norm {norm:.3f}")
        if step and step % 2000 == 0:
            if rank == 0:
                torch.save({"model": model.module.state_dict(), "step": step}, f"ckpt_{step}.pt")
            dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
