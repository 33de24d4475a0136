# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""DDP ImageNet training loop (ResNet-50, AMP, gradient accumulation, preemption-safe)."""
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def worker_init(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


def main(data_dir, epochs=90, accum=4, seed=0, ckpt="ckpt/last.pt"):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    set_seed(seed + rank)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))  # ok: MLS307

    tf = torchvision.transforms.Compose([torchvision.transforms.RandomResizedCrop(224), torchvision.transforms.RandomHorizontalFlip(), torchvision.transforms.ToTensor()])
    ds = torchvision.datasets.ImageFolder(os.path.join(data_dir, "train"), tf)
    sampler = DistributedSampler(ds, seed=seed)
    loader = DataLoader(ds, 64, sampler=sampler, num_workers=8, worker_init_fn=worker_init, pin_memory=True)
    model = DDP(torchvision.models.resnet50().cuda(), device_ids=[local])
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * dist.get_world_size() / 8, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler = torch.cuda.amp.GradScaler()
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True)) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        sched.step()
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, ckpt)  # ok: MLS308
            print(f"epoch {epoch} loss {loss.item() * accum:.3f} lr {sched.get_last_lr()[0]:.4f}")
        dist.barrier()  # ok: MLS307
        if stop["flag"]:
            break
    dist.destroy_process_group()


if __name__ == "__main__":
    main(os.environ.get("IMAGENET_DIR", "/data/imagenet"))
