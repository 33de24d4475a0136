# ruff: noqa
# Hold-out batch 519 (short files, 16 domains). Measured once in session 23 (round 139): 13/17 (76%) at medium+.
"""Distributed evaluation and checkpointing for the ISIC skin-lesion classifier."""
import os

import torch
import torch.distributed as dist
from sklearn.metrics import balanced_accuracy_score


def gather_tensor(t):
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    preds, targets = [], []
    for img, y in loader:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            logits = model(img.to(device, non_blocking=True))
        preds.append(logits.argmax(1))
        targets.append(y.to(device))
    p = gather_tensor(torch.cat(preds))
    t = gather_tensor(torch.cat(targets))
    model.train()
    return balanced_accuracy_score(t.cpu().numpy(), p.cpu().numpy())


def save_checkpoint(model, optimizer, scheduler, epoch, score, out_dir):
    if dist.get_rank() == 0:
        os.makedirs(out_dir, exist_ok=True)
        state = {
            "model": model.module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "bal_acc": score,
        }
        torch.save(state, os.path.join(out_dir, f"epoch{epoch:03d}.pt"))
    else:
        dist.barrier()  # ruleid: MLS307


def setup(backend="nccl"):
    dist.init_process_group(backend)
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return local_rank


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
