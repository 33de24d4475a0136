# ruff: noqa
# Hold-out batch 104 (long 170-220 line DDP/FSDP/DeepSpeed scripts, one buried case each). Measured once in session 4 (round 35): 6/6 (100%) at medium+.
"""ResNet-50 training recipe with DDP + AMP, preemption-safe checkpointing and EMA weights.

Designed for preemptible SLURM partitions: on SIGTERM/SIGUSR1 the job writes a resume
checkpoint and exits cleanly so the requeued job picks up where it stopped.
    srun python train_resnet_ddp_amp.py --data /datasets/imagenet --out /ckpt/r50
"""
import argparse
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import transforms as T


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=90)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--base-lr", type=float, default=0.1, help="lr for a global batch of 256")
    ap.add_argument("--wd", type=float, default=5e-5)
    ap.add_argument("--warmup-epochs", type=float, default=5.0)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.9998)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=8)
    return ap.parse_args()


def init_distributed():
    if "SLURM_PROCID" in os.environ and "RANK" not in os.environ:
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["LOCAL_RANK"] = os.environ["SLURM_LOCALID"]
        os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    rank = int(os.environ["RANK"])  # ok: MLS308
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    for attempt in range(5):
        try:
            dist.init_process_group("nccl", rank=rank, world_size=world)
            break
        except RuntimeError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    torch.cuda.set_device(local)
    return rank, world, local


def commit_hash():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)  # ok: MLS411, MLS412
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301


def build_model():
    model = torchvision.models.resnet50(weights=None)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, torchvision.models.resnet.Bottleneck):
            m.bn3.weight.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    return model


class Ema:
    def __init__(self, model, decay):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model, step):
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.shadow[k].copy_(v)


def lr_for(step, steps_per_epoch, args, peak):
    warm = int(args.warmup_epochs * steps_per_epoch)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, args.epochs * steps_per_epoch - warm)
    return 0.5 * peak * (1.0 + math.cos(math.pi * t))


@torch.no_grad()
def validate(model, loader, device):
    model.eval()
    acc = torch.zeros(2, device=device)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16):
            pred = model(x).argmax(1)
        acc += torch.stack([(pred == y).sum().float(), torch.tensor(float(y.numel()), device=device)])
    dist.all_reduce(acc)
    model.train()
    return (100.0 * acc[0] / acc[1]).item()


def main():
    args = parse_args()
    rank, world, local = init_distributed()
    device = torch.device("cuda", local)
    torch.manual_seed(args.seed)  # ok: MLS301
    if world > 64:
        args.workers = min(args.workers, 6)  # ok: MLS308
    peak_lr = args.base_lr * args.bs * world / 256

    norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_ds = torchvision.datasets.ImageFolder(os.path.join(args.data, "train"), T.Compose(  # ok: MLS309
        [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4), T.ToTensor(), norm]))
    val_ds = torchvision.datasets.ImageFolder(os.path.join(args.data, "val"), T.Compose(
        [T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm]))
    sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed)
    train_dl = DataLoader(train_ds, args.bs, sampler=sampler, num_workers=args.workers, pin_memory=True,
                          drop_last=True, worker_init_fn=worker_init_fn, persistent_workers=True)
    val_dl = DataLoader(val_ds, 128, sampler=DistributedSampler(val_ds, shuffle=False), num_workers=args.workers)

    model = build_model().to(device).to(memory_format=torch.channels_last)
    ema = Ema(model, args.ema)
    model = DDP(model, device_ids=[local])
    opt = torch.optim.SGD(model.parameters(), lr=peak_lr, momentum=0.9, weight_decay=args.wd, nesterov=True)
    scaler = torch.cuda.amp.GradScaler()
    crit = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)  # ok: MLS309

    resume = os.path.join(args.out, "resume.pt")
    start_epoch, step = 0, 0
    if os.path.exists(resume):
        ck = torch.load(resume, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        scaler.load_state_dict(ck["scaler"])
        ema.shadow = ck["ema"]
        start_epoch, step = ck["epoch"], ck["step"]

    def save(epoch):
        if rank == 0:
            os.makedirs(args.out, exist_ok=True)
            blob = {"model": model.module.state_dict(), "opt": opt.state_dict(), "scaler": scaler.state_dict(),
                    "ema": ema.shadow, "epoch": epoch, "step": step, "commit": commit_hash()}
            torch.save(blob, resume + ".tmp")
            os.replace(resume + ".tmp", resume)
        dist.barrier()  # ok: MLS307

    preempted = {"hit": False}

    def handle_preempt(signum, frame):
        preempted["hit"] = True

    signal.signal(signal.SIGTERM, handle_preempt)  # ok: MLS307
    signal.signal(signal.SIGUSR1, handle_preempt)

    steps_per_epoch = len(train_dl)
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        for x, y in train_dl:
            x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = lr_for(step, steps_per_epoch, args, peak_lr)  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            ema.update(model.module, step)
            step += 1
            if rank == 0 and step % 200 == 0:
                print(f"ep {epoch} step {step} loss {loss.item():.3f} lr {opt.param_groups[0]['lr']:.4f}", flush=True)
            if preempted["hit"]:
                save(epoch)
                dist.destroy_process_group()  # ok: MLS307
                sys.exit(0)  # ok: MLS307
        top1 = validate(model, val_dl, device)
        if rank == 0:
            print(f"epoch {epoch} top1 {top1:.2f}", flush=True)
        save(epoch + 1)

    dist.destroy_process_group()


if __name__ == "__main__":
    main()
