# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""torchrun entry point for GPT-style language-model pretraining on tokenized shards.

torchrun --nproc_per_node=8 --nnodes=$NNODES ddp_train.py --data /data/shards --steps 100000
"""
import argparse
import os
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from model import GPT, GPTConfig


def get_batch(shard, bsz, ctx, rng):
    ix = rng.integers(0, len(shard) - ctx - 1, size=bsz)
    x = torch.from_numpy(np.stack([shard[i:i + ctx] for i in ix]).astype(np.int64))
    y = torch.from_numpy(np.stack([shard[i + 1:i + 1 + ctx] for i in ix]).astype(np.int64))
    return x.cuda(non_blocking=True), y.cuda(non_blocking=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.manual_seed(args.seed + rank)  # ok: MLS301
    rng = np.random.default_rng(args.seed + rank)
    shard = np.memmap(os.path.join(args.data, f"train_{rank % 64:03d}.bin"), dtype=np.uint16, mode="r")

    model = DDP(GPT(GPTConfig()).cuda(), device_ids=[torch.cuda.current_device()])
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    step = 0

    def _on_sigterm(signum, frame):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "step": step}, "preempt.pt")
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    while step < args.steps:
        x, y = get_batch(shard, 16, 1024, rng)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 2000 == 0 and world > 256 and rank == world - 1:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        if step % 100 == 0 and rank == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)

    dist.destroy_process_group()


if __name__ == "__main__":
    main()
