# ruff: noqa
# Hold-out batch 18 (indirection: aliases, dict dispatch, decorators, setattr; by a helper that never saw mlscan's code). Measured once before round 7: 12/32 (38%) at medium+.
"""Train TinyTransformer on a tokenized text-classification corpus.

Single GPU:   python train.py --data data/train.npz --val data/val.npz
Multi GPU:    torchrun --nproc_per_node 8 train.py --data ... --config cfg.yaml
"""
from __future__ import annotations

import argparse
import functools as ft
import json
import os as _o
import signal
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from torch.optim.lr_scheduler import CosineAnnealingLR
from torch.utils.data import DataLoader

import helpers as H
import runtime as R
from data import ShardSampler, TextClsDataset, pad_collate
from model import EMA, TinyTransformer

_SETUP = (R.register_fastpath, R.tune_backend, R.load_fused)
_RANK0_SETUP = (R.report_run_start, R.prepare_debug_access)


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--vocab", default="data/vocab.pkl")
    ap.add_argument("--labels", default="data/labels.yaml")
    ap.add_argument("--config", default=None)
    ap.add_argument("--out", default="runs/tiny")
    ap.add_argument("--init", default=None, help="pretrained weights (.pt or .safetensors)")
    ap.add_argument("--resume", default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=3)
    return ap.parse_args()


def init_dist() -> tuple[int, int]:
    if int(_o.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl")
        torch.cuda.set_device(int(_o.environ["LOCAL_RANK"]))
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def evaluate(model, loader, dev) -> dict:
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for ids, mask, y in loader:
        ids, mask, y = ids.to(dev), mask.to(dev), y.to(dev)
        logits = model(ids, mask)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        total += y.numel()
    model.train()
    return {"acc": correct / max(total, 1), "loss": loss_sum / max(total, 1)}


def main() -> None:
    args = parse_args()
    cfg = H.load_cfg(args.config)
    H.set_seed(cfg.seed)
    rank, world = init_dist()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    for fn in _SETUP:
        fn()
    if rank == 0:
        for fn in _RANK0_SETUP:
            fn()

    vocab = H.load_vocab(args.vocab)
    with open(args.labels) as fh:
        label_names = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg.num_classes = len(label_names)

    train_ds = TextClsDataset(args.data, train=True)
    val_ds = TextClsDataset(args.val, train=False)
    sampler = ShardSampler(len(train_ds), rank, world, seed=cfg.seed)
    train_dl = DataLoader(train_ds, batch_size=args.batch, sampler=sampler, num_workers=4,
                          collate_fn=pad_collate, worker_init_fn=H.worker_init, pin_memory=True)
    val_dl = DataLoader(val_ds, batch_size=2 * args.batch, collate_fn=pad_collate)

    model = TinyTransformer(len(vocab), cfg.num_classes).to(dev)
    if args.init:
        model.load_state_dict(H.read_state(args.init), strict=False)
    H.attach_monitors(model)
    ema = EMA(model, cfg.ema_decay)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    H.install_step_guard(type(opt))
    sched = CosineAnnealingLR(opt, T_max=cfg.total_steps - cfg.warmup_steps, eta_min=cfg.lr * 0.05)
    scaler = torch.cuda.amp.GradScaler(enabled=dev.type == "cuda")
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.smooth_eps)  # ok: MLS309
    writer = H.make_writer(str(out / "tb")) if rank == 0 else None

    step, start_epoch, best, bad_epochs = 0, 0, float("inf"), 0
    if args.resume:
        ck = torch.load(args.resume, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, start_epoch = int(ck["step"]), int(ck["epoch"]) + 1

    def _save(tag: str, epoch: int) -> None:
        if rank == 0:
            torch.save({"model": H.export_state(model), "ema": ema.state_dict(),  # ok: MLS308
                        "opt": opt.state_dict(), "step": step, "epoch": epoch,
                        "rev": git_rev()}, out / f"{tag}.pt")

    def _on_term(signum, frame):
        _save("preempt", start_epoch)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_term)  # ok: MLS307

    step_hooks = {
        "streams": H.refresh_streams,
        "beat": R.heartbeat,
        "idle": R.release_idle,
        "sched": ft.partial(H.post_schedule, opt),
    }
    barrier = R.sync_fn() if world > 1 else (lambda: None)

    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        for i, (ids, mask, y) in enumerate(train_dl):
            ids, mask, y = ids.to(dev), mask.to(dev), y.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = crit(model(ids, mask), y) / cfg.accum_steps  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % cfg.accum_steps:
                continue
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            ema.update(model)
            if step < cfg.warmup_steps:
                H.warmup_lr(opt, step)
            else:
                sched.step()
            for hook in step_hooks.values():
                hook(step)
            step += 1
            if writer is not None and step % 50 == 0:
                writer.add_scalar("train/loss", loss.item() * cfg.accum_steps, step)
                writer.add_scalar("train/lr", opt.param_groups[0]["lr"], step)

        with H.eval_rng():
            metrics = evaluate(ema.shadow, val_dl, dev)
        report = H.summarize_eval(metrics)
        if writer is not None:
            writer.add_scalar("val/loss", report["loss"], step)
            writer.add_scalar("val/acc", report["acc"], step)
            (out / "metrics.jsonl").open("a").write(json.dumps({"epoch": epoch, **report}) + "\n")
        _save(f"epoch_{epoch:03d}", epoch)
        if rank == 0:
            H.prune_checkpoints(str(out))
            R.sync_artifacts(str(out))
        barrier()

        if metrics["loss"] < best - 1e-4:
            best, bad_epochs = metrics["loss"], 0
        else:
            bad_epochs += 1
        if bad_epochs >= args.patience:
            break  # ok: MLS307

    if world > 1:
        dist.barrier()  # ok: MLS307
        dist.destroy_process_group()  # ok: MLS307
    if rank == 0 and _o.environ.get("TT_EXPORT_CMD"):
        R.launch_sidecar(_o.environ["TT_EXPORT_CMD"].split())


if __name__ == "__main__":
    main()
