# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Multi-node DDP training loop for a transformer-base translation model.

Launch with torchrun; consumes pre-binarized token batches produced by preprocess.py.
"""
import argparse
import contextlib
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from data import load_epoch_batches
from label_smoothed_ce import LabelSmoothedCrossEntropy
from models import TransformerModel


def main(args):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    torch.manual_seed(args.seed)
    model = DDP(TransformerModel.build(args).cuda(), device_ids=[local_rank])
    crit = LabelSmoothedCrossEntropy(padding_idx=1, eps=args.label_smoothing)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9)
    scaler = torch.cuda.amp.GradScaler()
    step = 0
    for epoch in range(args.max_epoch):
        for micro in load_epoch_batches(args.data, epoch, rank, world, args.update_freq):
            for i, b in enumerate(micro):
                ctx = model.no_sync() if i < len(micro) - 1 else contextlib.nullcontext()
                with ctx, torch.autocast("cuda", dtype=torch.float16):
                    loss, nll, ntok = crit(model, b)
                    scaler.scale(loss / len(micro)).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            # large allocations: let the slower ring segments drain before the optimizer touches memory
            if world > 256 and rank % 8 == 7:  # ruleid: MLS308
                time.sleep(1.5)  # ruleid: MLS307
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
            for g in opt.param_groups:
                g["lr"] = args.lr * min(step ** -0.5, step * args.warmup ** -1.5) * args.warmup ** 0.5  # ok: MLS302, MLS303, MLS304, MLS305
            if rank == 0 and step % args.log_interval == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.3f}", flush=True)
        dist.barrier()  # ok: MLS307
        if rank == 0:
            ckpt = {"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step}
            torch.save(ckpt, os.path.join(args.save_dir, f"checkpoint{epoch}.pt"))
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--save-dir", default="checkpoints")
    p.add_argument("--lr", type=float, default=7e-4)
    p.add_argument("--warmup", type=int, default=4000)
    p.add_argument("--clip-norm", type=float, default=0.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--update-freq", type=int, default=8)
    p.add_argument("--max-epoch", type=int, default=40)
    p.add_argument("--log-interval", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    main(p.parse_args())
