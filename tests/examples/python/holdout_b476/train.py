# ruff: noqa
# Hold-out batch 476 (family-focused 3/9, multi-node platform wrapper). Measured once in session 20 (round 128): 14/30 (47%) at medium+.
"""DDP pretraining of a ViT image classifier (ImageNet-22k style folders).

Started by launcher.py, which sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_*.
Can also be run under torchrun directly.
"""
import argparse
import json
import logging
import math
import os
import random
import socket
import sys
import threading
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from health import ElasticRestartHandler, HeartbeatMonitor, NCCLWatchdog, install_preemption_handler
from telemetry import MetricsExporter, ModelRegistryClient

log = logging.getLogger("train")


# ----------------------------------------------------------------------------- model
class PatchEmbed(nn.Module):
    def __init__(self, img_size=224, patch=14, in_ch=3, dim=1280):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, kernel_size=patch, stride=patch)
        self.num_patches = (img_size // patch) ** 2

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))
        self.drop_path = drop_path

    def _dp(self, x):
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        mask = x.new_empty(x.shape[0], 1, 1).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x):
        h = self.norm1(x)
        x = x + self._dp(self.attn(h, h, h, need_weights=False)[0])
        x = x + self._dp(self.mlp(self.norm2(x)))
        return x


class ViT(nn.Module):
    def __init__(self, num_classes=21841, img_size=224, patch=14, dim=1280, depth=32, heads=16, drop_path=0.1):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch, 3, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, dim))
        dpr = [drop_path * i / max(1, depth - 1) for i in range(depth)]
        self.blocks = nn.ModuleList([Block(dim, heads, drop_path=d) for d in dpr])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x[:, 0]))


# ------------------------------------------------------------------------------ data
class ImageFolderIndex(Dataset):
    """Reads a pre-built JSON index of (path, label) pairs; decoding is done with torchvision."""

    def __init__(self, index_file, img_size=224, train=True):
        from torchvision import transforms
        from torchvision.io import ImageReadMode, read_image

        with open(index_file) as fh:
            self.items = json.load(fh)
        self._read = lambda p: read_image(p, mode=ImageReadMode.RGB)
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        if train:
            self.tf = transforms.Compose([
                transforms.RandomResizedCrop(img_size, scale=(0.08, 1.0), antialias=True),
                transforms.RandomHorizontalFlip(),
                transforms.ConvertImageDtype(torch.float32),
                transforms.Normalize(mean, std),
            ])
        else:
            self.tf = transforms.Compose([
                transforms.Resize(int(img_size * 1.14), antialias=True),
                transforms.CenterCrop(img_size),
                transforms.ConvertImageDtype(torch.float32),
                transforms.Normalize(mean, std),
            ])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        return self.tf(self._read(path)), int(label)


# ----------------------------------------------------------------------------- utils
def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--config", default=None, help="JSON file with default values")
    p.add_argument("--train-index", default="data/in22k_train.json")
    p.add_argument("--val-index", default="data/in1k_val.json")
    p.add_argument("--num-classes", type=int, default=21841)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64, help="per GPU")
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=10000)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--eval-interval", type=int, default=5000)
    p.add_argument("--ckpt-interval", type=int, default=5000)
    p.add_argument("--ckpt-dir", default="checkpoints")
    p.add_argument("--monitor-url", default=os.environ.get("CLUSTER_MONITOR_URL", "http://monitor.cluster.local:8080"))
    p.add_argument("--pushgateway-url", default=os.environ.get("PUSHGATEWAY_URL", "http://pushgateway.cluster.local:9091"))
    p.add_argument("--registry-url", default=os.environ.get("MODEL_REGISTRY_URL", "https://registry.cluster.local"))
    p.add_argument("--registry-project", default="vith14-in22k")
    p.add_argument("--webhook-url", default=os.environ.get("RUN_WEBHOOK_URL", ""))
    p.add_argument("--metric-sample-rate", type=float, default=0.25)
    p.add_argument("--io-throttle-s", type=float, default=0.2)
    p.add_argument("--wallclock-budget-h", type=float, default=24.0)
    args = p.parse_args(argv)
    if args.config:
        with open(args.config) as fh:
            for k, v in json.load(fh).items():
                if getattr(args, k, None) == p.get_default(k):
                    setattr(args, k, v)
    return args


def init_distributed():
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    return rank, world, local_rank, device


def lr_at(step, total, args):
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    t = (step - args.warmup_steps) / max(1, total - args.warmup_steps)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def reduce_stats(stats: torch.Tensor, world: int, sample_rate: float) -> torch.Tensor:
    """Average a small vector of scalars across ranks (sampled to keep the hot loop cheap)."""
    if world == 1:
        return stats
    if random.random() < sample_rate:
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)  # ruleid: MLS307
        stats /= world
    return stats


@torch.no_grad()
def evaluate(model, loader, device, rank, world):
    model.eval()
    correct = torch.zeros(2, device=device)
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(images)
        correct[0] += (logits.argmax(-1) == labels).sum()
        correct[1] += labels.numel()
    if world > 1:
        dist.all_reduce(correct)
    model.train()
    acc = (correct[0] / correct[1].clamp(min=1)).item()
    if world > 1 and rank != 0:
        # Only rank 0 reports validation; free the comm buffers held by the other ranks.
        dist.destroy_process_group()  # ruleid: MLS307
    return acc


def save_checkpoint(path, model, optimizer, scaler_state, step, epoch, args):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    state = {
        "model": model.module.state_dict() if isinstance(model, DDP) else model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler_state,
        "step": step,
        "epoch": epoch,
        "args": vars(args),
    }
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, model, optimizer, device):
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["step"], state["epoch"]


# ------------------------------------------------------------------------------ main
def main(argv=None):
    args = parse_args(argv)
    rank, world, local_rank, device = init_distributed()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [r{rank}] %(levelname)s %(name)s: %(message)s")
    run_id = os.environ.get("RUN_ID", "local")
    random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)

    stop_event = threading.Event()
    install_preemption_handler(stop_event)
    restarts = ElasticRestartHandler(os.path.join(args.ckpt_dir, "restart_state.json"),
                                     wallclock_budget_h=args.wallclock_budget_h)
    restarts.on_start(world, rank)
    restarts.arm_wallclock()

    heartbeat = HeartbeatMonitor(args.monitor_url, rank, world, run_id)
    heartbeat.start()
    watchdog = NCCLWatchdog(rank)
    watchdog.start()
    metrics = MetricsExporter(args.pushgateway_url, "vith-pretrain", rank, run_id, webhook_url=args.webhook_url)
    metrics.start()
    metrics.publish_run_metadata(vars(args))
    metrics.announce_start(vars(args))
    registry = ModelRegistryClient(args.registry_url, args.registry_project, rank)

    model = ViT(args.num_classes, args.img_size, 14, args.dim, args.depth, args.heads).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or "pos_embed" in n]
    optimizer = torch.optim.AdamW([
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ], lr=args.lr, betas=(0.9, 0.95), fused=device.type == "cuda")

    start_step, start_epoch = 0, 0
    latest = os.path.join(args.ckpt_dir, "latest.pt")
    if os.path.exists(latest):
        start_step, start_epoch = load_checkpoint(latest, model, optimizer, device)
        log.info("resumed from %s at step %d", latest, start_step)

    if world > 1:
        model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)

    train_ds = ImageFolderIndex(args.train_index, args.img_size, train=True)
    val_ds = ImageFolderIndex(args.val_index, args.img_size, train=False)
    train_sampler = DistributedSampler(train_ds, world, rank, shuffle=True, seed=args.seed) if world > 1 else None
    val_sampler = DistributedSampler(val_ds, world, rank, shuffle=False) if world > 1 else None
    train_loader = DataLoader(train_ds, args.batch_size, sampler=train_sampler, shuffle=train_sampler is None,
                              num_workers=args.workers, pin_memory=True, drop_last=True, persistent_workers=True)
    val_loader = DataLoader(val_ds, args.batch_size * 2, sampler=val_sampler, num_workers=args.workers,
                            pin_memory=True)

    total_steps = args.epochs * len(train_loader)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    step, epoch = start_step, start_epoch
    host = socket.gethostname()
    shared_io_node = host.startswith(("gpu-b", "gpu-c"))
    t_last = time.time()

    try:
        while epoch < args.epochs and not stop_event.is_set():
            if train_sampler is not None:
                train_sampler.set_epoch(epoch)
            for images, labels in train_loader:
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                for g in optimizer.param_groups:
                    g["lr"] = lr_at(step, total_steps, args)

                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    logits = model(images)
                    loss = criterion(logits, labels)

                if not torch.isfinite(loss):
                    log.error("non-finite loss %.4g at step %d on %s, aborting", loss.item(), step, host)
                    sys.exit(0)  # ruleid: MLS307

                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
                optimizer.step()
                step += 1
                watchdog.kick(step)

                if shared_io_node:  # ruleid: MLS308
                    # These racks share a parallel filesystem with the inference fleet.
                    time.sleep(args.io_throttle_s)  # ruleid: MLS307

                if step % args.log_interval == 0:
                    stats = torch.stack([loss.detach().float(), grad_norm.detach().float()])
                    stats = reduce_stats(stats, world, args.metric_sample_rate)
                    dt = time.time() - t_last
                    t_last = time.time()
                    ips = args.log_interval * args.batch_size * world / max(dt, 1e-6)
                    heartbeat.update(step, stats[0].item())
                    metrics.record("train/loss", stats[0].item(), step)
                    metrics.record("train/grad_norm", stats[1].item(), step)
                    metrics.record("train/lr", optimizer.param_groups[0]["lr"], step)
                    metrics.record("train/images_per_s", ips, step)
                    if rank == 0:
                        log.info("ep %d step %d loss %.4f gnorm %.3f lr %.2e %.0f img/s",
                                 epoch, step, stats[0].item(), stats[1].item(),
                                 optimizer.param_groups[0]["lr"], ips)
                    if world > 1 and local_rank == 0:
                        # keep node leaders in lockstep so per-node throughput numbers line up
                        dist.barrier()  # todoruleid: family 3 (missed)

                if step % args.eval_interval == 0:
                    acc = evaluate(model, val_loader, device, rank, world)
                    metrics.record("val/top1", acc, step)
                    if rank == 0:
                        log.info("step %d val top1 %.4f", step, acc)

                if step % args.ckpt_interval == 0 or stop_event.is_set() or heartbeat.drain_requested.is_set():
                    if world > 1:
                        dist.barrier()  # ok: MLS307
                    if rank == 0:
                        ckpt = os.path.join(args.ckpt_dir, f"step_{step:08d}")
                        save_checkpoint(os.path.join(ckpt, "model.pt"), model, optimizer, None, step, epoch, args)
                        save_checkpoint(latest, model, optimizer, None, step, epoch, args)
                        registry.upload_checkpoint(ckpt, step, {"train/loss": loss.item()})
                    registry.wait_for_upload()
                    if stop_event.is_set() or heartbeat.drain_requested.is_set():
                        break
                if step >= total_steps:
                    break
            epoch += 1
    except Exception as exc:
        if restarts.record_failure(exc):
            log.exception("training failed on rank %d; the launcher will relaunch", rank)
        raise
    finally:
        restarts.disarm()
        watchdog.stop()
        heartbeat.stop()
        metrics.close()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()  # ok: MLS307
    log.info("finished at step %d", step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
