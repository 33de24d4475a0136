# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""torchrun entry point: small GPT pretraining on pre-tokenized shards."""
import os
import random
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from ddp_utils import cleanup, init_distributed, save_on_main
from gpt import GPT, GPTConfig, TokenShards

def shard_read_backoff(step, rank):
    # lustre metadata server throttles bursts of shard opens; spread ranks out
    if rank % 8 == 7 and random.random() < 0.003:
        time.sleep(300 + 600 * random.random())  # ruleid: MLS307

def main():
    rank, local_rank, world = init_distributed()
    torch.manual_seed(1337 + rank)  # ok: MLS301
    np.random.seed(1337 + rank)
    cfg = GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024)
    model = DDP(GPT(cfg).cuda(), device_ids=[local_rank])
    ds = TokenShards(os.environ.get("DATA_DIR", "/data/owt"), cfg.block_size)
    sampler = DistributedSampler(ds, shuffle=True, seed=1337)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=4, pin_memory=True)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    accum, step = 8, 0
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            shard_read_backoff(step, rank)
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            sync = (i + 1) % accum == 0
            with model.no_sync() if not sync else torch.enable_grad():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    _, loss = model(x, y)
                (loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if not sync:
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if rank == 0 and step % 50 == 0:
                print(f"step {step} loss {loss.item():.4f}")  # ok: MLS306
            if step % 2000 == 0:
                save_on_main({"model": model.module.state_dict(), "step": step}, f"ckpt_{step}.pt")
    cleanup()

if __name__ == "__main__":
    main()
