# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""Token-choice MoE language model pretraining loop (DDP, packed token shards)."""
import argparse
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from moe_lm import MoETransformer, PackedTokenDataset


def set_seed(seed):
    torch.manual_seed(seed)  # ok: MLS301
    np.random.seed(seed)


def _span_worker_init(worker_id):
    # independent span-masking stream per loader worker
    np.random.seed((int(time.time() * 1e3) + worker_id) % 2**32)  # ruleid: MLS301


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--accum", type=int, default=4)
    p.add_argument("--aux-coef", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()

    dist.init_process_group("nccl")
    rank = dist.get_rank()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    set_seed(args.seed + rank)

    ds = PackedTokenDataset(args.data, seq_len=2048, span_mask_prob=0.15)
    sampler = DistributedSampler(ds, shuffle=True, seed=args.seed)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=4,
                        worker_init_fn=_span_worker_init, pin_memory=True)

    model = DDP(MoETransformer(n_experts=16, top_k=2, d_model=1024).cuda())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for it, (tokens, targets) in enumerate(loader):
            tokens, targets = tokens.cuda(non_blocking=True), targets.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits, aux_loss = model(tokens)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
            loss = (loss + args.aux_coef * aux_loss) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            if (it + 1) % args.accum == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad(set_to_none=True)
            if rank == 0 and it % 100 == 0:
                print(f"epoch {epoch} it {it} loss {loss.item() * args.accum:.4f}")
        if rank == 0:
            torch.save(model.module.state_dict(), f"moe_epoch{epoch}.pt")  # ok: MLS307
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
