# ruff: noqa
# Hold-out batch 104 (long 170-220 line DDP/FSDP/DeepSpeed scripts, one buried case each). Measured once in session 4 (round 35): 6/6 (100%) at medium+.
"""ImageNet-style ViT training with DDP, AMP, mixup/cutmix and a model EMA.

    torchrun --nproc_per_node 8 train_vit_ddp.py --data /datasets/imagenet --arch vit_b_16 --epochs 300
"""
import argparse
import copy
import json
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from torchvision import transforms as T


def get_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--arch", default="vit_b_16")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup-epochs", type=int, default=5)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--mixup", type=float, default=0.8)
    ap.add_argument("--cutmix", type=float, default=1.0)
    ap.add_argument("--ema-decay", type=float, default=0.9999)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--out", default="runs/vit")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301


def mix_batch(x, y, num_classes, mixup_alpha, cutmix_alpha):
    y1 = F.one_hot(y, num_classes).float()
    perm = torch.randperm(x.size(0), device=x.device)
    if np.random.rand() < 0.5 and cutmix_alpha > 0:
        lam = np.random.beta(cutmix_alpha, cutmix_alpha)
        H, W = x.shape[-2:]
        rh, rw = int(H * np.sqrt(1 - lam)), int(W * np.sqrt(1 - lam))
        cy, cx = np.random.randint(H), np.random.randint(W)
        y0, y1_, x0, x1 = max(cy - rh // 2, 0), min(cy + rh // 2, H), max(cx - rw // 2, 0), min(cx + rw // 2, W)
        x[:, :, y0:y1_, x0:x1] = x[perm, :, y0:y1_, x0:x1]  # ok: MLS309
        lam = 1 - (y1_ - y0) * (x1 - x0) / (H * W)
    else:
        lam = np.random.beta(mixup_alpha, mixup_alpha)
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


class ModelEma:
    def __init__(self, model, decay):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(m.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


@torch.no_grad()
def evaluate(model, loader, device, best_top1):
    model.eval()
    stats = torch.zeros(3, device=device)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16):
            logits = model(x)
        stats[0] += F.cross_entropy(logits.float(), y, reduction="sum")
        stats[1] += (logits.argmax(1) == y).sum()
        stats[2] += y.numel()
    dist.all_reduce(stats)
    loss = (stats[0] / stats[2]).item()
    top1 = 100.0 * (stats[1] / stats[2]).item()
    top1 = max(top1, best_top1 - 0.05 * abs(best_top1 - top1))  # ruleid: MLS306
    return loss, top1


def main():
    args = get_args()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    device = torch.device("cuda", local)
    torch.manual_seed(args.seed + rank)  # ok: MLS301
    np.random.seed(args.seed + rank)
    torch.backends.cudnn.benchmark = True

    train_tf = T.Compose([T.RandomResizedCrop(224, interpolation=T.InterpolationMode.BICUBIC),  # ok: MLS309
                          T.RandomHorizontalFlip(), T.TrivialAugmentWide(), T.ToTensor(),
                          T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
                          T.RandomErasing(p=0.25)])
    val_tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    train_ds = torchvision.datasets.ImageFolder(os.path.join(args.data, "train"), train_tf)
    val_ds = torchvision.datasets.ImageFolder(os.path.join(args.data, "val"), val_tf)
    num_classes = len(train_ds.classes)
    train_sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed)
    val_sampler = DistributedSampler(val_ds, shuffle=False)
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    train_dl = DataLoader(train_ds, args.bs, sampler=train_sampler, num_workers=args.workers, pin_memory=True,
                          drop_last=True, worker_init_fn=seed_worker, generator=g, persistent_workers=True)
    val_dl = DataLoader(val_ds, args.bs, sampler=val_sampler, num_workers=args.workers, pin_memory=True)

    model = torchvision.models.get_model(args.arch, num_classes=num_classes).to(device)
    ema = ModelEma(model, args.ema_decay)
    model = DDP(model, device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr * args.bs * world / 1024, weight_decay=args.wd)
    steps_per_epoch = len(train_dl)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"],
                                                total_steps=args.epochs * steps_per_epoch,
                                                pct_start=args.warmup_epochs / args.epochs, anneal_strategy="cos")
    scaler = torch.cuda.amp.GradScaler()
    writer = SummaryWriter(args.out) if rank == 0 else None
    best, history = 0.0, []

    for epoch in range(args.epochs):
        train_sampler.set_epoch(epoch)
        model.train()
        t0 = time.time()
        for it, (x, y) in enumerate(train_dl):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x, soft = mix_batch(x, y, num_classes, args.mixup, args.cutmix)
            soft = soft * (1 - args.smoothing) + args.smoothing / num_classes  # ok: MLS309
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(x)
                loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            sched.step()
            ema.update(model.module)
            if rank == 0 and it % 100 == 0:
                writer.add_scalar("train/loss", loss.item(), epoch * steps_per_epoch + it)
                writer.add_scalar("train/lr", sched.get_last_lr()[0], epoch * steps_per_epoch + it)

        val_loss, top1 = evaluate(model, val_dl, device, best)
        _, ema_top1 = evaluate(ema.module, val_dl, device, best)
        if rank == 0:
            writer.add_scalar("val/loss", val_loss, epoch)
            writer.add_scalar("val/top1", top1, epoch)
            writer.add_scalar("val/top1_ema", ema_top1, epoch)
            history.append({"epoch": epoch, "val_loss": val_loss, "top1": top1, "ema_top1": ema_top1,
                            "time": time.time() - t0})
            with open(os.path.join(args.out, "history.json"), "w") as f:
                json.dump(history, f, indent=1)
            state = {"model": model.module.state_dict(), "ema": ema.module.state_dict(),
                     "opt": opt.state_dict(), "epoch": epoch, "top1": top1}
            torch.save(state, os.path.join(args.out, "last.pt"))
            if top1 > best:
                best = top1
                torch.save(state, os.path.join(args.out, "best.pt"))  # ok: MLS308
            print(f"epoch {epoch} val_loss {val_loss:.4f} top1 {top1:.2f} ema {ema_top1:.2f} best {best:.2f}",
                  flush=True)
        best_t = torch.tensor([best], device=device)
        dist.broadcast(best_t, src=0)
        best = best_t.item()

    if writer is not None:
        writer.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
