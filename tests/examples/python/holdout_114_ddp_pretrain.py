# ruff: noqa
# Hold-out batch 114 (adversarial: routine-looking indirection). Measured once in session 4 (round 38): 10/20 (50%) at medium+.
"""DDP pretraining loop with preemption-safe checkpointing and early stopping."""
import os
import signal

import torch
import torch.distributed as dist
import wandb
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

_STOP = {"requested": False}


def _on_sigterm(signum, frame):
    # SLURM sends SIGTERM before preemption; finish the step and checkpoint
    _STOP["requested"] = True


def save(model, opt, epoch, path):
    if dist.get_rank() == 0:  # ok: MLS307
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, path)
    dist.barrier()  # ok: MLS307


def train(model_fn, train_set, val_fn, epochs=50, patience=5, ckpt="ckpt/ddp_last.pt"):
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    model = DDP(model_fn().cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.05)
    sampler = DistributedSampler(train_set, shuffle=True, seed=1234)
    loader = DataLoader(train_set, batch_size=32, sampler=sampler, num_workers=8, pin_memory=True)
    if rank == 0:
        wandb.init(project="pretrain", config={"epochs": epochs, "world": dist.get_world_size()})
    best, bad = float("inf"), 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        model.train()
        for batch in loader:
            loss = model(**{k: v.cuda(non_blocking=True) for k, v in batch.items()}).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if _STOP["requested"]:
                break
        val_loss = val_fn(model)
        if rank == 0:
            wandb.log({"epoch": epoch, "val/loss": val_loss})  # ok: MLS306
        save(model, opt, epoch, ckpt)
        if _STOP["requested"]:
            break
        if val_loss < best - 1e-4:
            best, bad = val_loss, 0
        else:
            bad += 1
            if bad >= patience:  # ok: MLS307
                break
    dist.destroy_process_group()  # ok: MLS307
