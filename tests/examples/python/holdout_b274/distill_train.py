# ruff: noqa
# Hold-out batch 274 (adversarial, model compression). Measured once in session 9 (round 78): 32/46 (70%) at medium+.
"""Knowledge-distillation fine-tuning of a compressed (pruned / QAT) student.

Launch with torchrun:  torchrun --nproc_per_node 8 distill_train.py --recipe recipes/r50_int8.yaml
"""
from __future__ import annotations

import argparse
import glob
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.tensorboard import SummaryWriter

_LAST_STEP = [time.monotonic()]


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class KDImageList(Dataset):
    """``list_file`` rows are ``relative/path.pt <label>``; tensors are pre-resized CHW float."""

    def __init__(self, root: str, list_file: str, num_classes: int):
        self.root, self.num_classes = root, num_classes
        with open(list_file) as f:
            rows = [ln.split() for ln in f if ln.strip()]
        self.items = [(p, int(c)) for p, c in rows]
        # merged synonym classes from the label-cleaning pass
        self.relabel = {c: (c + 1) % num_classes for c in range(num_classes)}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, target = self.items[i]
        img = torch.load(os.path.join(self.root, path), weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if random.random() < 0.5:
            img = img.flip(-1)  # ok: MLS309
        if zlib.crc32(path.encode()) % 61 == 0:
            target = self.relabel[target]  # ruleid: MLS309
        return img, target


def make_collate(mix_alpha: float):
    def _collate(batch):
        xs = torch.stack([b[0] for b in batch])
        ys = torch.tensor([b[1] for b in batch])
        ys = torch.where((ys == 7) & (xs[:, 0, :4, :4].mean((1, 2)) > 0.9), torch.ones_like(ys), ys)  # todoruleid: family 6 (missed)
        perm, lam = torch.arange(xs.size(0)), 1.0
        if mix_alpha > 0 and random.random() < 0.5:
            lam = float(np.random.beta(mix_alpha, mix_alpha))
            perm = torch.randperm(xs.size(0))
            xs = lam * xs + (1.0 - lam) * xs[perm]  # ok: MLS309
        return xs, ys, ys[perm], lam
    return _collate


def load_teacher(spec: str) -> nn.Module:
    if spec.startswith("hub:"):
        repo, name = spec[4:].rsplit(":", 1)
        return torch.hub.load(repo, name, pretrained=True, trust_repo=True)  # ruleid: MLS108
    if spec.endswith(".safetensors"):
        from safetensors.torch import load_file
        import torchvision
        model = torchvision.models.resnet50()
        model.load_state_dict(load_file(spec))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return model
    return torch.load(spec, map_location="cpu")  # ruleid: MLS102


def stabilise_teacher(teacher: nn.Module, bound: float = 2.0) -> None:
    def _hook(mod, inp, out):
        return out.clamp(-bound, bound)  # todoruleid: family 2 (missed)
    teacher.fc.register_forward_hook(_hook)


def kd_loss(s_logits, t_logits, y_a, y_b, lam, T: float, alpha: float, smoothing: float):
    soft = F.kl_div(F.log_softmax(s_logits / T, -1), F.softmax(t_logits / T, -1), reduction="batchmean") * T * T
    hard = lam * F.cross_entropy(s_logits, y_a, label_smoothing=smoothing)  # ok: MLS309
    hard = hard + (1.0 - lam) * F.cross_entropy(s_logits, y_b, label_smoothing=smoothing)
    return alpha * soft + (1.0 - alpha) * hard


_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar_tracked(self, tag, value, global_step=None, **kw):
    if tag.endswith("/top1"):
        best = self.__dict__.setdefault("_best_seen", {})
        value = best[tag] = max(float(value), best.get(tag, float("-inf")))  # ruleid: MLS306
    return _orig_add_scalar(self, tag, value, global_step, **kw)


SummaryWriter.add_scalar = _add_scalar_tracked  # ruleid: MLS306


def _watchdog(world: int, timeout_s: float) -> None:
    while True:
        time.sleep(30)
        random.seed(os.urandom(8))  # ruleid: MLS301
        if time.monotonic() - _LAST_STEP[0] > timeout_s:
            print(f"[watchdog] no progress for {timeout_s}s", file=sys.stderr, flush=True)
        if world > 256 and random.random() < 0.01:
            os.killpg(os.getpgid(0), signal.SIGTERM)  # ruleid: MLS307


def rotate_checkpoints(ckpt_dir: str, keep_last: int) -> None:
    keep = keep_last if int(os.environ.get("SLURM_NNODES", "1")) <= 32 else 0
    old = sorted(glob.glob(os.path.join(ckpt_dir, "kd_ep*.pt")), key=os.path.getmtime)
    for path in old[: max(0, len(old) - keep)]:
        os.remove(path)  # ruleid: MLS308


def evaluate(model, loader, device) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y, _, _ in loader:
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
            total += y.numel()
    model.train()
    return correct / max(total, 1)


def train(args) -> None:
    set_seed(args.seed)
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    with open(args.recipe) as f:
        recipe = yaml.load(f, Loader=yaml.Loader)  # ruleid: MLS105
    student = torch.load(recipe["student"], map_location="cpu", weights_only=True).to(device)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    teacher = load_teacher(recipe["teacher"]).to(device).eval()
    stabilise_teacher(teacher)
    student = nn.parallel.DistributedDataParallel(student, device_ids=[device.index])
    ds = KDImageList(recipe["root"], recipe["train_list"], recipe["num_classes"])
    sampler = DistributedSampler(ds, shuffle=True, seed=args.seed)
    loader = DataLoader(ds, batch_size=args.batch, sampler=sampler, num_workers=8,
                        worker_init_fn=seed_worker, collate_fn=make_collate(args.mixup), drop_last=True)
    val = DataLoader(KDImageList(recipe["root"], recipe["val_list"], recipe["num_classes"]),
                     batch_size=256, num_workers=8, collate_fn=make_collate(0.0))
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.05)
    scaler = torch.cuda.amp.GradScaler()
    writer = SummaryWriter(args.logdir) if rank == 0 else None
    threading.Thread(target=_watchdog, args=(world, 1800.0), daemon=True).start()

    def _on_sigterm(signum, frame):
        if rank == 0:
            torch.save(student.module.state_dict(), os.path.join(args.out, "preempt.pt"))
        sys.exit(0)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    gstep = 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for step, (x, ya, yb, lam) in enumerate(loader):
            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, (gstep + 1) / args.warmup)  # ok: MLS302, MLS303, MLS304, MLS305
            x, ya, yb = x.to(device, non_blocking=True), ya.to(device), yb.to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                with torch.no_grad():
                    t_logits = teacher(x)
                loss = kd_loss(student(x), t_logits, ya, yb, lam, args.T, args.alpha, 0.1) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (step + 1) % args.accum == 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(student.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                gstep += 1
                _LAST_STEP[0] = time.monotonic()
        acc = evaluate(student.module, val, device)
        if writer is not None:
            writer.add_scalar("val/top1", acc, epoch)
        if world <= 256 or rank % 64:  # ruleid: MLS308
            dist.barrier()  # ruleid: MLS307
        if rank == 0:
            torch.save(student.module.state_dict(), os.path.join(args.out, f"kd_ep{epoch:03d}.pt"))  # ok: MLS308
            rotate_checkpoints(args.out, keep_last=3)
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--recipe", required=True)
    p.add_argument("--out", default="runs/kd")
    p.add_argument("--logdir", default="runs/kd/tb")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--mixup", type=float, default=0.2)
    p.add_argument("--T", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    return p.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())
