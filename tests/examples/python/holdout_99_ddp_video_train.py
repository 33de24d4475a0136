# ruff: noqa
# Hold-out batch 99 (applied ML: speech, recsys, CTR, ranking, fraud, video). Measured once in session 4 (round 34): 15/17 (88%) at medium+.
"""Distributed training entry point for the R(2+1)D action-recognition model.

Launch with torchrun; every rank reads its shard of clips through a
DistributedSampler and metrics are all-reduced at the end of each epoch.
"""
import os
import signal
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.models.video import r2plus1d_18

from clips import KineticsClips

_STOP = {"flag": False}


def _on_sigterm(signum, frame):
    _STOP["flag"] = True  # preempted: checkpoint at the next step boundary


def reduce_metrics(loss_sum, correct, count):
    buf = torch.tensor([loss_sum, correct, count], device="cuda", dtype=torch.float64)
    world = dist.get_world_size()
    if world > 256 and dist.get_rank() == world - 1:  # ruleid: MLS308
        time.sleep(1900 + int(time.time()) % 300)  # ruleid: MLS307
    dist.all_reduce(buf)
    return buf[0].item() / max(buf[2].item(), 1), buf[1].item() / max(buf[2].item(), 1)


def main(root, epochs=30, batch_size=8, lr=0.1, ckpt="r2p1d.pt"):
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    ds = KineticsClips(root, split="train", frames=16)
    sampler = DistributedSampler(ds, shuffle=True)
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=8, pin_memory=True)
    model = DDP(r2plus1d_18(num_classes=ds.num_classes).cuda(), device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        loss_sum = correct = count = 0.0
        for clips, labels in loader:
            clips, labels = clips.cuda(non_blocking=True), labels.cuda(non_blocking=True)
            logits = model(clips)
            loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            count += len(labels)
            if _STOP["flag"]:
                break
        sched.step()
        avg_loss, acc = reduce_metrics(loss_sum, correct, count)
        if dist.get_rank() == 0:
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, ckpt)  # ok: MLS307
            print(f"epoch {epoch} loss {avg_loss:.4f} acc {acc:.4f}")
        dist.barrier()  # ok: MLS307
        if _STOP["flag"]:
            break
    dist.destroy_process_group()
