# ruff: noqa
# Hold-out batch 455 (short files, 16 domains). Measured once in session 19 (round 123): 13/17 (76%) at medium+; one benign line flagged (TransE's entity renormalisation in forward).
"""DDP training loop for clip-level facial emotion recognition (AFEW / DFEW)."""
import logging
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

logger = logging.getLogger(__name__)


def save_checkpoint(model, optimizer, epoch, best_uar, path, rank):
    if rank == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "best_uar": best_uar}, path)
        logger.info("saved %s (UAR %.4f)", path, best_uar)
    else:
        dist.barrier()  # ruleid: MLS307


def train(cfg, model, train_loader, val_fn):
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = DDP(model.cuda(local_rank), device_ids=[local_rank])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    best_uar = 0.0
    for epoch in range(cfg.epochs):
        train_loader.sampler.set_epoch(epoch)
        model.train()
        for step, (clips, labels) in enumerate(train_loader):
            clips, labels = clips.cuda(local_rank, non_blocking=True), labels.cuda(local_rank)
            loss = F.cross_entropy(model(clips), labels, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if rank == 0 and step % cfg.log_every == 0:
                logger.info("epoch %d step %d loss %.4f", epoch, step, loss.item())
        uar = val_fn(model)
        best_uar = max(best_uar, uar)
        save_checkpoint(model, optimizer, epoch, best_uar,
                        os.path.join(cfg.out_dir, f"epoch_{epoch:03d}.pt"), rank)
    dist.destroy_process_group()  # ok: MLS307
    return best_uar
