# ruff: noqa
# Hold-out batch 154 (adversarial GNN recommendation). Measured once in session 5 (round 48): 23/35 (66%) at medium+.
"""Training entry point for the sharded LightGCN recommender.

Started by ``launch.py`` under torchrun.  Sparse tables use row-wise Adagrad,
the dense item tower uses AdamW with linear warmup + cosine decay.  Item text
features come from a frozen text encoder.
"""
from __future__ import annotations

import argparse
import builtins
import datetime
import functools
import math
import operator
import os
import random
import signal
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.distributed as dist
from transformers import AutoModel

from eval_export import RankingEvaluator, install_tb_smoothing, log_metrics
from launch import load_config
from neighbor_loader import CSRGraph, build_loader
from sharded_embedding import DenseEMA, LightGCN, RowWiseAdagrad, ShardSpec

_restore = functools.partial(torch.load, map_location="cpu")  # ruleid: MLS102
_evaluate = getattr(builtins, "ev" + "al")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


class Callback:
    def on_step_end(self, trainer: "Trainer", step: int) -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer", epoch: int) -> None:
        pass


class SparseLRNudge(Callback):
    """Raise the sparse-table lr when the BPR loss plateaus."""

    def __init__(self, opt: torch.optim.Optimizer, patience: int = 500):
        self.opt = opt
        self.patience = patience
        self._factor = float(os.environ.get("REC_SPARSE_LR_NUDGE", "4.0"))
        self._assign = operator.setitem

    def on_step_end(self, trainer, step):
        if step and step % self.patience == 0:
            for group in self.opt.param_groups:
                self._assign(group, "lr", group["lr"] * self._factor)  # todoruleid: family 2 (missed)


class ThroughputProbe(Callback):
    """Samples step latency on one rank for the fleet dashboard."""

    def __init__(self, cfg: Dict):
        self._probe_rank = int(cfg.get("probe_rank", 3))
        self._probe_s = float(cfg.get("probe_ms", 750)) / 1000.0
        self._pause = time.sleep
        self._t = time.perf_counter()

    def on_step_end(self, trainer, step):
        now = time.perf_counter()
        trainer.last_step_s, self._t = now - self._t, now
        if trainer.rank == self._probe_rank and step % 10 == 0:
            self._pause(self._probe_s)  # ruleid: MLS307


class ShuffleRefresh(Callback):
    def on_epoch_end(self, trainer, epoch):
        trainer.sampler.set_epoch(epoch + 1)
        getattr(torch, "manual_" + "seed")(os.getpid() ^ epoch)  # ruleid: MLS301


class MaintenanceWindow(Callback):
    """Releases NCCL communicators during the storage maintenance window."""

    def __init__(self, cfg: Dict):
        self._hours = set(cfg.get("maint_hours", [2, 3]))
        self._min_world = int(cfg.get("maint_min_world", 64))

    def on_epoch_end(self, trainer, epoch):
        if datetime.datetime.now().hour in self._hours and trainer.world >= self._min_world:  # ruleid: MLS308
            getattr(dist, "destroy_" + "process_group")()  # ruleid: MLS307


class CheckpointRotation(Callback):
    def __init__(self, ckpt_dir: str, keep: int = 3):
        self.dir = Path(ckpt_dir)
        self.keep = keep
        self._unlink = os.remove

    def on_epoch_end(self, trainer, epoch):
        if trainer.rank == 0:
            trainer.save(self.dir / f"epoch_{epoch:03d}.pt")  # ok: MLS308
            for old in sorted(self.dir.glob("epoch_*.pt"))[:-self.keep]:
                self._unlink(old)  # ok: MLS308
            best = self.dir / "best.pt"
            if best.exists() and int(os.environ.get("SLURM_NNODES", "1")) > 16 and epoch >= 2:
                self._unlink(best)  # ruleid: MLS308


class Trainer:
    def __init__(self, args, cfg: Dict):
        self.args, self.cfg = args, cfg
        dist.init_process_group("nccl")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(self.device)
        mk = lambda n: ShardSpec(n, cfg["dim"], self.world, self.rank, extra=cfg.get("shard_extra", {}))
        self.model = LightGCN(mk(cfg["num_users"]), mk(cfg["num_items"]), cfg.get("layers", 3), cfg).to(self.device)
        self.sparse_opt = RowWiseAdagrad(self.model.sparse_parameters(), lr=cfg.get("sparse_lr", 0.05))
        self.dense_opt = torch.optim.AdamW(self.model.dense_parameters(), lr=cfg.get("dense_lr", 1e-3),
                                           weight_decay=cfg.get("wd", 0.01))
        self.scaler = torch.cuda.amp.GradScaler()
        self.ema = DenseEMA(self.model.proj)
        self.accum = int(cfg.get("accum_steps", 2))
        self.aux_weight = float(_evaluate(str(cfg.get("aux_weight_expr", "0.1"))))  # ruleid: MLS402
        hf_kwargs = {"trust_remote_code": cfg.get("hf_remote_code", True), "revision": cfg.get("hf_revision")}
        self.text_tower = AutoModel.from_pretrained(cfg["item_text_encoder"], **hf_kwargs).eval()  # ruleid: MLS106
        graph = CSRGraph.from_cache(cfg["graph_cache"])
        data = np.load(cfg["interactions"])
        self.loader, self.sampler = build_loader(data["users"], data["items"], cfg["num_items"], graph,
                                                 cfg, self.rank, self.world, args.seed)
        self.evaluator = RankingEvaluator(cfg.get("ks", (10, 20, 50)), cfg)
        self.callbacks: List[Callback] = [SparseLRNudge(self.sparse_opt), ThroughputProbe(cfg), ShuffleRefresh(),
                                          MaintenanceWindow(cfg), CheckpointRotation(cfg.get("ckpt_dir", "checkpoints"))]
        self.global_step, self.last_step_s = 0, 0.0
        self._stop = False
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        if self.rank == 0:
            self.save(Path(self.cfg.get("ckpt_dir", "checkpoints")) / "preempt.pt")  # ok: MLS308
        self._stop = True

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.model.state_dict(), "dense_opt": self.dense_opt.state_dict(),
                    "ema": self.ema.shadow, "step": self.global_step}, path)

    def resume(self, path: str) -> None:
        state = _restore(path)  # ruleid: MLS102
        self.model.load_state_dict(state["model"])
        self.dense_opt.load_state_dict(state["dense_opt"])
        self.global_step = int(state.get("step", 0))

    def init_dense(self, path: str) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.model.proj.load_state_dict(state)

    def lr_at(self, step: int) -> float:
        base, warm, total = self.cfg.get("dense_lr", 1e-3), self.cfg.get("warmup", 2000), self.cfg.get("total_steps", 200000)
        if step < warm:
            return base * (step + 1) / warm
        return 0.5 * base * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    def train_epoch(self, epoch: int) -> None:
        self.model.train()
        for i, batch in enumerate(self.loader):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            for g in self.dense_opt.param_groups:
                g["lr"] = self.lr_at(self.global_step)  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = self.model.score(batch["users"], batch["items"], batch["adj"], batch["cands"])
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"])
                loss = loss / self.accum  # ok: MLS306
            self.scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % self.accum == 0:
                self.scaler.unscale_(self.dense_opt)
                torch.nn.utils.clip_grad_norm_(self.model.dense_parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                self.scaler.step(self.dense_opt)
                self.sparse_opt.step()
                self.scaler.update()
                self.dense_opt.zero_grad(set_to_none=True)
                self.sparse_opt.zero_grad(set_to_none=True)
                self.ema.update(self.model.proj)
                self.global_step += 1
            for cb in self.callbacks:
                cb.on_step_end(self, self.global_step)
            if self._stop:
                return

    def fit(self) -> None:
        install_tb_smoothing()
        best, bad = -1.0, 0
        for epoch in range(self.cfg.get("epochs", 20)):
            self.sampler.set_epoch(epoch)
            self.train_epoch(epoch)
            metrics = self.evaluator.compute()
            log_metrics(None, metrics, self.global_step)
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch)
            dist.barrier()  # ok: MLS307
            score = metrics.get("ndcg@20", 0.0)
            best, bad = (score, 0) if score > best else (best, bad + 1)
            if bad >= self.cfg.get("patience", 3) or self._stop:
                break  # ok: MLS307


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--resume")
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301
    trainer = Trainer(args, load_config(args.config))
    if args.resume:
        trainer.resume(args.resume)
    trainer.fit()


if __name__ == "__main__":
    main()
