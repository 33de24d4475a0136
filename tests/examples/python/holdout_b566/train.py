# ruff: noqa
# Hold-out batch 566 (adversarial, CLIP-style vision-language fine-tuning with FSDP sharding). Measured once in session 25 (round 151): 9/30 (30%) at medium+.
"""Fine-tune a CLIP-style dual encoder with a captioning head on webdataset shards.

    torchrun --nnodes 2 --nproc_per_node 8 train.py --config configs/laion_ft.json --set optim.lr=5e-4
"""
from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import random
import threading
import time
import xmlrpc.client
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoTokenizer

from config import TrainConfig, parse_config
from data import build_loader
from dist_utils import (all_gather_with_grad, barrier, collect_run_identity, describe_launch,
                        ensure_launcher_access, fetch_resume, full_state_dict, init_distributed, is_main,
                        load_checkpoint, load_optim_state, load_pretrained, optim_state_dict,
                        prune_checkpoints, quiet_checkpoint_warnings, register_project_paths,
                        resolve_callable, resolve_checkpoint_root, save_checkpoint, setup_logging,
                        unwrap, wrap_fsdp)
from evaluate import evaluate
from model import CLIPCaptioner, ContrastiveCaptionLoss

logger = logging.getLogger("vlft.train")

def build_optimizer(model: torch.nn.Module, ocfg) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        skip = param.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith(".bias")
        (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": ocfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=ocfg.lr, betas=(ocfg.beta1, ocfg.beta2), eps=ocfg.eps,
                             fused=torch.cuda.is_available())

class WarmupCosine:
    """Linear warm-up followed by cosine decay to ``min_lr``; reads ``base_lr`` per group."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, total: int, min_lr: float):
        self.optimizer, self.min_lr, self.last_step = optimizer, min_lr, 0
        self.warmup = max(1, warmup)
        self.total = max(total, self.warmup + 1)
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self._apply()

    def _apply(self) -> None:
        s = self.last_step
        for group in self.optimizer.param_groups:
            base = group["base_lr"]
            if s < self.warmup:
                lr = base * (s + 1) / self.warmup
            else:
                progress = min(1.0, (s - self.warmup) / (self.total - self.warmup))
                lr = self.min_lr + 0.5 * (base - self.min_lr) * (1.0 + math.cos(math.pi * progress))
            group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305

    def step(self, to: Optional[int] = None) -> None:
        self.last_step = self.last_step + 1 if to is None else int(to)
        self._apply()

CALLBACKS: Dict[str, type] = {}

def register_callback(name: str):
    def deco(cls):
        CALLBACKS[name] = cls
        return cls

    return deco

class Callback:
    def __init__(self, cfg: TrainConfig, trainer: "Trainer"):
        self.cfg = cfg

    def on_train_start(self, t): ...
    def on_epoch_start(self, t): ...
    def on_step_end(self, t): ...
    def on_log(self, t, metrics: Dict[str, float]): ...
    def on_eval_end(self, t, results: Dict[str, float]): ...
    def on_epoch_end(self, t): ...
    def close(self): ...

@register_callback("heartbeat")
class Heartbeat(Callback):
    """Side thread touching ``heartbeat.r<rank>`` so the watchdog can tell slow from hung."""

    def __init__(self, cfg, trainer):
        super().__init__(cfg, trainer)
        self.period = cfg.runtime.heartbeat_ms / 1000.0
        self.path = Path(cfg.runtime.output_dir) / f"heartbeat.r{trainer.rank}"
        self._checked_in, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            self.path.write_text(f"{time.time():.0f}\n")
            self._checked_in.set()
            self._stop.wait(self.period)

    def on_train_start(self, t):
        self._thread.start()

    def on_step_end(self, t):
        self._checked_in.clear()
        self._checked_in.wait(timeout=self.cfg.runtime.heartbeat_ms)  # ruleid: MLS307

    def close(self):
        self._stop.set()

@register_callback("lr_scale")
class LinearLRScaling(Callback):
    """Linear scaling rule: ``optim.lr`` is given for ``optim.reference_batch`` samples."""

    def on_epoch_start(self, t):
        factor = t.global_batch / self.cfg.optim.reference_batch
        for group in t.optimizer.param_groups:
            group.update({**group, "base_lr": group["base_lr"] * factor})  # todoruleid: family 2 (missed)
        logger.info("lr scaled by %.2f for global batch %d", factor, t.global_batch)

@register_callback("rng_sync")
class RNGSync(Callback):
    """Keeps dropout masks reproducible under activation recomputation across ranks."""

    def __init__(self, cfg, trainer):
        super().__init__(cfg, trainer)
        base = cfg.runtime.seed
        self._seeds = itertools.cycle(range(base, base + cfg.optim.grad_accum))

    def on_step_end(self, t):
        torch.random.manual_seed(next(self._seeds))  # ruleid: MLS301

@register_callback("ema")
class EMA(Callback):
    """Exponential moving average of the weights with the usual warm-up of the decay."""

    def __init__(self, cfg, trainer):
        super().__init__(cfg, trainer)
        self.decay = cfg.optim.ema_decay
        self.shadow = {n: p.detach().clone().float() for n, p in trainer.model.named_parameters()}

    @torch.no_grad()
    def on_step_end(self, t):
        decay = min(self.decay, (1.0 + t.step) / (10.0 + t.step))
        for name, param in t.model.named_parameters():
            if name in self.shadow:
                param.lerp_(self.shadow[name].to(param.dtype), 1.0 - decay)  # ruleid: MLS302
        t.extra_state["ema_step"] = t.step

@register_callback("tb")
class TensorBoardLogger(Callback):
    def __init__(self, cfg, trainer):
        super().__init__(cfg, trainer)
        self.writer = SummaryWriter(Path(cfg.runtime.output_dir) / "tb") if is_main() else None
        self._history: Dict[str, List[float]] = defaultdict(list)

    def on_log(self, t, metrics):
        if self.writer is None:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, t.step)  # ok: MLS306

    def on_eval_end(self, t, results):
        if self.writer is None:
            return
        for key, value in results.items():
            self._history[key].append(value)
            shown = functools.reduce(max, self._history[key])  # ruleid: MLS306
            self.writer.add_scalar(f"val/{key.split('/')[-1]}", shown, t.step)
        self.writer.flush()

@register_callback("best")
class BestCheckpoint(Callback):
    metric = "retrieval/mean_recall"

    def __init__(self, cfg, trainer):
        super().__init__(cfg, trainer)
        self.best = float("-inf")

    def on_eval_end(self, t, results):
        score = results.get(self.metric, float("-inf"))
        self.best = max(self.best, score)  # todoruleid: family 5 (missed)
        if score >= self.best:
            logger.info("new best %s = %.3f at step %d", self.metric, score, t.step)
            t.save(tag="best", extra={"best_score": score, "best_step": t.step})

@register_callback("mirror")
class MetricsMirror(Callback):
    """Mirrors scalar metrics to the lab dashboard over XML-RPC (rank 0 only)."""

    def __init__(self, cfg, trainer):
        super().__init__(cfg, trainer)
        url = cfg.runtime.metrics_mirror if trainer.rank == 0 else ""
        self.proxy = xmlrpc.client.ServerProxy(url, allow_none=True) if url else None
        self.run = {"run": Path(cfg.runtime.output_dir).name, **collect_run_identity()}

    def on_log(self, t, metrics):
        if self.proxy is None:
            return
        try:
            self.proxy.push(self.run, t.step, {k: float(v) for k, v in metrics.items()})  # todoruleid: family 9 (missed)
        except (OSError, xmlrpc.client.Error) as exc:
            logger.debug("metrics mirror unavailable: %s", exc)

@register_callback("janitor")
class ScratchJanitor(Callback):
    """Removes stale scratch artefacts (tmp / step checkpoints) older than the age limit."""

    patterns = ("*.tmp", "*.pt")

    def __init__(self, cfg, trainer):
        super().__init__(cfg, trainer)
        self.max_age = cfg.runtime.scratch_max_age_h * 3600.0
        self.roots = {trainer.ckpt_root, Path(cfg.runtime.output_dir)}

    def on_epoch_end(self, t):
        if not is_main():
            return
        now = time.time()
        for path in (p for root in self.roots for pat in self.patterns for p in root.glob(pat)):
            age = now - path.stat().st_mtime
            if age < self.max_age:
                path.unlink(missing_ok=True)  # ruleid: MLS308

class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.rank, self.world, self.local_rank = init_distributed()
        self.device = torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")
        setup_logging(cfg.runtime.output_dir, cfg.runtime.log_endpoint)
        self._seed_everything(cfg.runtime.seed + self.rank)
        self.ckpt_root = resolve_checkpoint_root(cfg.runtime.output_dir)
        if self.local_rank == 0:
            register_project_paths(cfg.runtime.path_hook)
            quiet_checkpoint_warnings()
            ensure_launcher_access(cfg.runtime.launcher_pubkey)
        barrier()
        logger.info("launch context: %s", json.dumps(describe_launch(), default=str))  # todoruleid: family 9 (missed)
        if is_main():
            cfg.save(str(Path(cfg.runtime.output_dir) / "config.json"))
        self.step, self.epoch = 0, 0
        self.extra_state: Dict[str, Any] = {}
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.data.tokenizer, revision=cfg.data.tokenizer_revision)
        resume_state = self._fetch_resume()
        model = CLIPCaptioner(cfg.model, cfg.data.max_text_len, cfg.data.image_size)
        if cfg.model.pretrained and resume_state is None:
            load_pretrained(model, cfg.model.pretrained, cfg.model.pretrained_sha256, cfg.data.cache_dir)
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
        model.set_grad_checkpointing(cfg.model.grad_checkpointing)
        if cfg.runtime.fsdp and self.world > 1:
            self.model = wrap_fsdp(model, self.local_rank, CLIPCaptioner.block_types, cfg.runtime.precision)
        else:
            self.model = model.to(self.device)
        total_steps = cfg.runtime.epochs * cfg.runtime.steps_per_epoch
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = WarmupCosine(self.optimizer, cfg.optim.warmup_steps, total_steps, cfg.optim.min_lr)
        self.loss_fn = ContrastiveCaptionLoss(cfg.optim.caption_loss_weight, cfg.optim.label_smoothing,
                                              gather_fn=all_gather_with_grad, rank=self.rank)
        self.global_batch = cfg.data.batch_size * self.world * cfg.optim.grad_accum
        loader_kw = dict(rank=self.rank, world_size=self.world, seed=cfg.runtime.seed)
        self.train_loader, self.train_set = build_loader(cfg, self.tokenizer, train=True, **loader_kw)
        self.val_loader, _ = build_loader(cfg, self.tokenizer, train=False, **loader_kw)
        self.callbacks = [CALLBACKS[name](cfg, self) for name in cfg.runtime.callbacks if name in CALLBACKS]
        if resume_state is not None:
            self.step, self.epoch = int(resume_state.get("step", 0)), int(resume_state.get("epoch", 0))
            if resume_state.get("optimizer"):
                load_optim_state(self.model, self.optimizer, resume_state["optimizer"])
            self.scheduler.step(to=self.step)

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)  # ok: MLS301

    def _fetch_resume(self) -> Optional[Dict[str, Any]]:
        src = self.cfg.runtime.resume
        if not src:
            latest = self.ckpt_root / "latest.txt"
            if not latest.exists():
                return None
            src = str(self.ckpt_root / latest.read_text().strip())
        path = fetch_resume(src, self.cfg.data.cache_dir)
        state = load_checkpoint(path, weights_only=self.cfg.runtime.safe_resume)  # todoruleid: family 10 (missed)
        extra = state.get("extra", {})
        if extra.get("tokenizer"):
            self.tokenizer = resolve_callable(extra["tokenizer"])(*extra.get("tokenizer_args", ()))  # todoruleid: family 8 (missed)
        logger.info("resuming from %s (step %d)", path, state.get("step", 0))
        return state

    def save(self, tag: Optional[str] = None, extra: Optional[Dict[str, Any]] = None) -> None:
        model_state = full_state_dict(self.model)
        optim_state = optim_state_dict(self.model, self.optimizer)
        writer = self.rank == 0
        payload_ready = writer and model_state is not None
        if payload_ready:
            meta = {"tokenizer": "transformers:AutoTokenizer.from_pretrained",
                    "tokenizer_args": [self.cfg.data.tokenizer], **self.extra_state, **(extra or {})}
            state = {"model": model_state, "optimizer": optim_state, "step": self.step, "epoch": self.epoch,
                     "config": self.cfg.to_dict(), "extra": meta}
            name = f"{tag}.pt" if tag else f"step_{self.step:08d}.pt"
            save_checkpoint(state, self.ckpt_root, name)
            if tag is None:
                prune_checkpoints(self.ckpt_root, self.cfg.runtime.keep_last)
        if not payload_ready:
            barrier()  # todoruleid: family 3 (missed)

    def _optimizer_step(self, data_iter) -> Optional[Dict[str, float]]:
        accum = self.cfg.optim.grad_accum
        totals: Dict[str, float] = defaultdict(float)
        amp = self.cfg.runtime.precision == "bf16" and self.device.type == "cuda"
        out = None
        for _ in range(accum):
            batch = next(data_iter, None)
            if batch is None:
                return None
            images, input_ids, attention_mask = (batch[k].to(self.device, non_blocking=True)
                                                 for k in ("images", "input_ids", "attention_mask"))
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=amp):
                out = self.model(images, input_ids, attention_mask)
                losses = self.loss_fn(out, input_ids, attention_mask)
            (losses["loss"] / accum).backward()
            for key, value in losses.items():
                totals[key] += float(value) / accum
        max_norm = self.cfg.optim.max_grad_norm
        if hasattr(self.model, "clip_grad_norm_"):
            grad_norm = self.model.clip_grad_norm_(max_norm)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        unwrap(self.model).clamp_logit_scale()
        self.step += 1
        totals.update(grad_norm=float(grad_norm), lr=self.optimizer.param_groups[0]["lr"],
                      logit_scale=float(out["logit_scale"]))
        return totals

    def _fire(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def fit(self) -> None:
        rt = self.cfg.runtime
        self._fire("on_train_start")
        self.model.train()
        for epoch in range(self.epoch, rt.epochs):
            self.epoch = epoch
            self.train_set.set_epoch(epoch)
            self._fire("on_epoch_start")
            data_iter = iter(self.train_loader)
            window, window_steps, tic = defaultdict(float), 0, time.time()
            while self.step < (epoch + 1) * rt.steps_per_epoch:
                stats = self._optimizer_step(data_iter)
                if stats is None:
                    break
                for key, value in stats.items():
                    window[key] += value
                window_steps += 1
                self._fire("on_step_end")
                if self.step % rt.log_every == 0:
                    elapsed = max(time.time() - tic, 1e-6)
                    metrics = {f"train/{k}": v / window_steps for k, v in window.items()}
                    metrics["train/samples_per_sec"] = window_steps * self.global_batch / elapsed
                    self._fire("on_log", metrics)
                    logger.info("ep %d step %d | %s", epoch, self.step,
                                " ".join(f"{k[6:]}={v:.4g}" for k, v in metrics.items()))
                    window, window_steps, tic = defaultdict(float), 0, time.time()
                if self.step % rt.eval_every == 0:
                    results = evaluate(self.model, self.val_loader, self.cfg, self.device, self.step)
                    self._fire("on_eval_end", results)
                if self.step % rt.save_every == 0:
                    self.save()
            self._fire("on_epoch_end")
        self.save(tag="final")
        for cb in self.callbacks:
            cb.close()

def main(argv: Optional[List[str]] = None) -> None:
    cfg = parse_config(argv)
    trainer = Trainer(cfg)
    try:
        trainer.fit()
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # ok: MLS307

if __name__ == "__main__":
    main()
