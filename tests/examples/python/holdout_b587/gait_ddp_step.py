# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""DDP training loop for silhouette-based gait recognition (GaitSet-style, triplet + CE)."""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def setup_ddp():
    dist.init_process_group(backend="nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def save_checkpoint(model, optimizer, epoch, path, rank):
    if rank == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch}, path)
        dist.barrier()  # ruleid: MLS307


def train(model_fn, loader, triplet_loss, ce_loss, args):
    rank, world, local_rank = setup_ddp()
    model = DDP(model_fn().cuda(local_rank), device_ids=[local_rank], find_unused_parameters=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[70000, 100000], gamma=0.1)
    step = 0
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)
        for seqs, labels in loader:
            seqs, labels = seqs.cuda(local_rank, non_blocking=True), labels.cuda(local_rank)
            embs, logits = model(seqs)
            loss = triplet_loss(embs, labels) + 0.1 * ce_loss(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sched.step()
            step += 1
            if rank == 0 and step % args.log_every == 0:
                print(f"[{epoch}:{step}] loss={loss.item():.4f} lr={sched.get_last_lr()[0]:.2e}")
        if (epoch + 1) % args.save_every == 0:
            save_checkpoint(model, optimizer, epoch,
                            os.path.join(args.out_dir, f"gait_{epoch:04d}.pt"), rank)
    dist.destroy_process_group()  # ok: MLS307
