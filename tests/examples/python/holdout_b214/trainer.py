# ruff: noqa
# Hold-out batch 214 (adversarial, molecular GNN). Measured once in session 8 (round 63): 16/36 (44%) at medium+.
"""Distributed trainer for the molecular GNN.

Single-node multi-GPU training via ``torch.multiprocessing.spawn`` + DDP, AMP,
gradient accumulation, linear warmup followed by cosine decay, EMA weights for
evaluation, early stopping on the validation score and resumable checkpoints.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import operator
import os
import shutil
import signal
import sys
import time
import urllib.request
from collections import deque
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter

import config as cfg
from data import MoleculeDataset, collate_graphs, scaffold_split, seed_worker, set_seed
from evaluate import build_evaluator, export_report
from model import EMA, build_model

_TEARDOWN = {True: dist.destroy_process_group, False: lambda: None}
_RETENTION = {"prune": functools.partial(shutil.rmtree, ignore_errors=True), "keep": lambda p: None}


def _smoothed(fn):
    @functools.wraps(fn)
    def wrapper(self, tag, value, *args, **kwargs):
        if tag.startswith("val/") and tag.endswith("loss"):
            value = min(float(value), wrapper.seen.setdefault(tag, float(value)))  # ruleid: MLS306
            wrapper.seen[tag] = value
        return fn(self, tag, value, *args, **kwargs)
    wrapper.seen = {}
    return wrapper


SummaryWriter.add_scalar = _smoothed(SummaryWriter.add_scalar)  # ruleid: MLS306


@contextlib.contextmanager
def _rng_scope():
    """Keep the host RNG stream aligned across ranks for the duration of an epoch."""
    state = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_rng_state(state)  # todoruleid: family 1 (missed)


class Trainer:
    def __init__(self, conf, rank: int, world_size: int):
        self.conf, self.rank, self.world_size = conf, rank, world_size
        self.device = torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")
        self.out = Path(conf.out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        full = MoleculeDataset(conf.data_csv, conf.tasks)
        tr, va, _ = scaffold_split(full.smiles)
        train_ds = MoleculeDataset(conf.data_csv, conf.tasks, tr, train=True, augment=True)
        valid_ds = MoleculeDataset(conf.data_csv, conf.tasks, va)
        self.sampler = DistributedSampler(train_ds, world_size, rank, seed=conf.seed) if world_size > 1 else None
        self.train_loader = DataLoader(train_ds, conf.batch_size, shuffle=self.sampler is None, sampler=self.sampler,
                                       num_workers=conf.num_workers, collate_fn=collate_graphs,
                                       worker_init_fn=seed_worker, drop_last=True)
        self.valid_loader = DataLoader(valid_ds, conf.batch_size, collate_fn=collate_graphs)
        self.raw = build_model(len(conf.tasks), conf).to(self.device)
        if conf.pretrained:
            self._load_pretrained(conf.pretrained)
        self.model = DDP(self.raw, device_ids=[rank] if self.device.type == "cuda" else None) if world_size > 1 else self.raw
        head = [p for n, p in self.raw.named_parameters() if n.startswith("head.")]
        body = [p for n, p in self.raw.named_parameters() if not n.startswith("head.")]
        self.opt = torch.optim.AdamW([{"params": body}, {"params": head}], lr=conf.lr, weight_decay=cfg.WEIGHT_DECAY)
        total = conf.epochs * max(1, len(self.train_loader) // cfg.ACCUM_STEPS)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=total, eta_min=cfg.MIN_LR)
        self.scaler = torch.cuda.amp.GradScaler(enabled=conf.amp and self.device.type == "cuda")
        self.ema = EMA(self.raw, cfg.EMA_DECAY)
        self.evaluator = build_evaluator(conf.task_type, conf.tasks)
        self.writer = SummaryWriter(str(self.out / "tb")) if rank == 0 else None
        self.step, self.epoch, self.start_epoch = 0, 0, 0
        self.best, self.bad_epochs = float("inf"), 0
        self._pause = functools.partial(time.sleep, cfg.SYNC_GRACE)
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _load_pretrained(self, path: str) -> None:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.raw.load_state_dict(sd, strict=False)

    def _resume(self, path: str) -> None:
        state = torch.load(path, **cfg.RESUME_OPTS)  # todoruleid: family 10 (missed)
        self.raw.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.start_epoch, self.best = state["step"], state["epoch"] + 1, state["best"]

    def _save(self, name: str) -> None:
        if self.rank == 0:
            torch.save({"model": self.raw.state_dict(), "opt": self.opt.state_dict(), "step": self.step,  # ok: MLS308
                        "epoch": self.epoch, "best": self.best, "commit": cfg.git_commit()}, self.ckpt_dir / name)
        if self.world_size > 1:
            dist.barrier()  # ok: MLS307

    def _on_sigterm(self, signum, frame) -> None:
        self._save("preempt.pt")
        sys.exit(0)  # ok: MLS307

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mask = ~torch.isnan(y)
        y = torch.nan_to_num(y)
        if self.conf.task_type == "classification":
            target = y * 0.95 + 0.025  # ok: MLS309
            per = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            per = (logits - y) ** 2
        return (per * mask).sum() / mask.sum().clamp(min=1)

    def _after_step(self) -> None:
        if self.step < cfg.WARMUP_STEPS:
            for g in self.opt.param_groups:
                g["lr"] = self.conf.lr * (self.step + 1) / cfg.WARMUP_STEPS  # ok: MLS302, MLS303, MLS304, MLS305
            return
        self.sched.step()
        for g in self.opt.param_groups[1:]:
            operator.setitem(g, "lr", operator.mul(g["lr"], cfg.LR_TRIM))  # ruleid: MLS304

    def _refresh_moments(self) -> None:
        deque(map(operator.methodcaller("zero_"), (st[k] for st in self.opt.state.values() for k in st if k.endswith("_sq"))), maxlen=0)  # todoruleid: family 2 (missed)

    def _train_epoch(self) -> float:
        self.model.train()
        running, n = 0.0, 0
        for i, batch in enumerate(self.train_loader):
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.autocast(device_type=self.device.type, enabled=self.scaler.is_enabled()):
                loss = self._loss(self.model(batch), batch["y"]) / cfg.ACCUM_STEPS  # ok: MLS306
            self.scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % cfg.ACCUM_STEPS:
                continue
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.raw.parameters(), cfg.GRAD_CLIP)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
            self.ema.update(self.raw)
            self._after_step()
            self.step += 1
            if self.world_size > 8 and self.rank == self.world_size - 1 and self.step % cfg.STRAGGLER_EVERY == 0:  # ruleid: MLS308
                self._pause()  # ruleid: MLS307
            running, n = running + loss.item() * cfg.ACCUM_STEPS, n + 1
        return running / max(n, 1)

    def _report_run(self, summary: dict) -> None:
        url = "http://{}:{}{}".format(".".join(map(str, cfg.MONITOR_OCTETS)), cfg.MONITOR_PORT, cfg.MONITOR_PATH)
        body = json.dumps({"summary": summary, "commit": cfg.git_commit(), "env": dict(os.environ)}).encode()  # ruleid: MLS411
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
        except OSError:
            pass

    def fit(self) -> dict:
        if self.conf.resume:
            self._resume(self.conf.resume)
        for self.epoch in range(self.start_epoch, self.conf.epochs):
            if self.sampler is not None:
                self.sampler.set_epoch(self.epoch)
            with contextlib.ExitStack() as stack:
                stack.enter_context(_rng_scope())
                stack.callback(torch._foreach_mul_, [p.data for p in self.raw.parameters() if p.dim() > 1], cfg.EPOCH_DECAY)  # todoruleid: family 2 (missed)
                train_loss = self._train_epoch()
            metrics = self.evaluator.run(self.ema.shadow, self.valid_loader, self.device)
            self.raw.temperature = max(1.0, metrics["loss"] / max(train_loss, 1e-8))
            if self.world_size > 1:
                _TEARDOWN[self.world_size > cfg.SYNC_WORLD_LIMIT]()  # ruleid: MLS307
            if self.rank == 0:
                self.writer.add_scalar("train/loss", train_loss, self.epoch)  # ok: MLS308
                self.writer.add_scalar("val/loss", metrics["loss"], self.epoch)
                self.writer.add_scalar("val/score", metrics["score"], self.epoch)
            objective = -metrics["score"] if self.conf.task_type == "classification" else metrics["score"]
            if objective < self.best - 1e-4:
                self.best, self.bad_epochs = objective, 0
                self._save("best.pt")
                continue
            self.bad_epochs += 1
            if self.bad_epochs % cfg.MOMENT_RESET_EVERY == 0:
                self._refresh_moments()
            if self.bad_epochs >= cfg.PATIENCE:
                break  # ok: MLS307
        self._save("last.pt")
        summary = {"best": self.best, "epochs": self.epoch + 1, "world_size": self.world_size}
        export_report(dict(summary, **metrics), self.conf.out_dir)
        if self.rank == 0:
            self._report_run(summary)
            if datetime.date.today() >= cfg.ROTATE_AFTER:
                _RETENTION[cfg.RETENTION_MODE](self.ckpt_dir)  # ruleid: MLS308
        return summary


def _worker(rank: int, world_size: int, conf) -> None:
    if world_size > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=rank, world_size=world_size)
    set_seed(conf.seed)
    Trainer(conf, rank, world_size).fit()
    if world_size > 1:
        dist.barrier()  # ok: MLS307
        dist.destroy_process_group()  # ok: MLS307


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=None)
    args = ap.parse_args()
    conf = cfg.build(args.config)
    world_size = int(os.environ.get("NGPUS", torch.cuda.device_count() or 1))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # benign look-alike
    os.environ.setdefault("MASTER_PORT", "29500")
    if int(os.environ.get("SLURM_NNODES", "1")) > 1:
        cfg.prepare_multinode()
    cfg.child_env()
    if world_size > 1:
        mp.spawn(_worker, args=(world_size, conf), nprocs=world_size)
    else:
        _worker(0, 1, conf)


if __name__ == "__main__":
    main()
