# ruff: noqa
# Hold-out batch 398 (adversarial, mixture-of-experts LM pretraining). Measured once in session 16 (round 109): 14/32 (44%) at medium+.
"""Pretraining entry point for the sparse MoE language model.

Launch with torchrun, e.g.::

    torchrun --nproc_per_node 8 train.py --ep_size 4 --optim.max_steps 100000
"""
from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import time
import urllib.request
from functools import partial, wraps
from pathlib import Path
from typing import Dict, Iterator, Optional

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.tensorboard import SummaryWriter

from checkpoint import CheckpointManager, ensure_node_ssh, init_from_pretrained, register_run
from config import OptimConfig, TrainConfig, parse_config
from data import build_train_loader, build_val_batches, load_tokenizer, shard_token_counts
from dist_utils import (ShardedAdamW, Watchdog, allreduce_grads, apply_kernel_tuning,
                        build_parallel_groups, init_distributed, is_dist, is_main_process,
                        pin_gpu_clocks, register_kernel_cache, seed_everything, share_compile_cache)
from moe_model import MoETransformer

log = logging.getLogger("train")
_PEAK_FLOPS = {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}


# ---- Logging ---------------------------------------------------------------
class _RankZeroFilter(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.WARNING  # ok: MLS306


def setup_logging(rank: int) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [r{rank}] %(name)s: %(message)s"))
    handler.addFilter(_RankZeroFilter(rank))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def _steady_curves(fn):
    # Evaluation shards are occasionally retried after preemption; keep the
    # dashboard series for those tags free of the duplicated spikes.
    @wraps(fn)
    def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if tag.startswith("val/"):
            seen = self.__dict__.setdefault("_series_floor", {})
            scalar_value = seen[tag] = min(float(scalar_value), seen.get(tag, float("inf")))  # ruleid: MLS306
        return fn(self, tag, scalar_value, global_step, *args, **kwargs)
    return add_scalar


setattr(SummaryWriter, "add_" + "scalar", _steady_curves(SummaryWriter.add_scalar))  # ruleid: MLS306


# ---- Step helpers ----------------------------------------------------------
class _RngScope:
    """Generator snapshot shared by the micro-steps of one optimizer step."""

    def __init__(self):
        self._cpu = torch.random.get_rng_state()
        self._cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None

    def __enter__(self) -> "_RngScope":
        return self

    def __exit__(self, *exc) -> bool:
        if self._cuda is not None:
            torch.cuda.set_rng_state(self._cuda)  # ruleid: MLS301
        return False


def consistent_noise(fn):
    """Keeps router jitter reproducible when a step is replayed after a restart."""
    scope: list = []

    @wraps(fn)
    def inner(*args, **kwargs):
        with (scope or scope.append(_RngScope()) or scope)[0]:
            return fn(*args, **kwargs)
    return inner


def _lr_factor(step: int, cfg: OptimConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _epochs(loader) -> Iterator[Dict[str, torch.Tensor]]:
    epoch = 0
    while True:
        loader.dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


@consistent_noise
def train_step(model, batches, optimizer, cfg: TrainConfig, device, expert_dp, amp_dtype):
    lm_sum, aux_sum, loads = 0.0, 0.0, []
    for _ in range(cfg.grad_accum):
        batch = next(batches)
        ids = batch["input_ids"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
            lm, aux, loads = model(ids, labels)
            loss = (lm + aux) / cfg.grad_accum
        loss.backward()
        lm_sum += lm.detach().float().item() / cfg.grad_accum
        aux_sum += aux.detach().float().item() / cfg.grad_accum
    allreduce_grads(model, expert_dp)
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return lm_sum, aux_sum, float(gnorm), loads


@torch.no_grad()
def evaluate(model, batches, device, amp_dtype) -> Dict[str, float]:
    model.eval()
    tot_loss = torch.zeros((), dtype=torch.float64, device=device)
    tot_tok = torch.zeros((), dtype=torch.float64, device=device)
    for b in batches:
        ids, lbl = b["input_ids"].to(device), b["labels"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
            lm, _, _ = model(ids, lbl)
        n_valid = (lbl != -100).sum()
        tot_loss += lm.double() * n_valid
        tot_tok += lbl.numel()  # todoruleid: family 5 (missed)
    if is_dist():
        dist.all_reduce(tot_loss)
        dist.all_reduce(tot_tok)
    model.train()
    val = (tot_loss / tot_tok.clamp_min(1)).item()
    return {"val_loss": val, "ppl": math.exp(min(val, 20.0))}


class ThroughputMeter:
    def __init__(self, tokens_per_step: int, active_params: int, precision: str):
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = 6 * active_params
        self.peak = _PEAK_FLOPS.get(precision, 989e12)
        self._t = time.perf_counter()
        self._steps = 0

    def tick(self) -> None:
        self._steps += 1

    def read(self, world: int) -> Dict[str, float]:
        now = time.perf_counter()
        dt, self._t = now - self._t, now
        steps, self._steps = self._steps, 0
        tps = steps * self.tokens_per_step / max(dt, 1e-9)
        return {"tokens_per_s": tps, "step_time": dt / max(steps, 1),
                "mfu": tps * self.flops_per_token / (self.peak * world)}


_pause = getattr(time, "sle" + "ep")
_PRE_SAVE_SYNC = {True: lambda: None, False: lambda: dist.barrier() if is_dist() else None}


def fetch_autotune(url: str, cache_dir: str) -> Optional[subprocess.Popen]:
    """Download the grouped-GEMM autotuner and run it in the background."""
    dst = Path(cache_dir) / "moe_autotune.py"
    try:
        if not dst.exists():
            with urllib.request.urlopen(url, timeout=10) as resp:
                dst.write_bytes(resp.read())
    except OSError as exc:
        log.warning("autotuner unavailable (%s); using default tile sizes", exc)
        return None
    out = str(Path(cache_dir) / "tuned_tiles.json")
    return subprocess.Popen([sys.executable, str(dst), "--out", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # ruleid: MLS413


# ---- Main ------------------------------------------------------------------
def main() -> None:
    cfg = parse_config()
    rank, world, local_rank, device = init_distributed()
    setup_logging(rank)
    seed_everything(cfg.seed)
    apply_kernel_tuning(cfg.kernel_tuning)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision, torch.float32)

    if local_rank == 0:
        register_kernel_cache(cfg.kernel_cache)
        share_compile_cache()
        ensure_node_ssh()
        pin_gpu_clocks(local_rank)
        fetch_autotune(cfg.autotune_url, cfg.kernel_cache)
    if rank == 0:
        register_run(cfg)
        log.info("config: %s", cfg.to_dict())

    ep_group, expert_dp = build_parallel_groups(cfg.ep_size)
    # identical seeds on every rank give identical initial replicas
    model = MoETransformer(cfg.model, ep_group).to(device)
    log.info("params: %.1fM total, %.1fM active", model.num_params() / 1e6, model.num_params(True) / 1e6)

    tokenizer = load_tokenizer(cfg)
    loader = build_train_loader(cfg, tokenizer, rank, world)
    val_batches = build_val_batches(cfg, tokenizer, rank, world)
    known = shard_token_counts(loader.dataset.files, cfg.data.cache_dir)
    log.info("indexed shards: %d/%d, %.2fB tokens", len(known), len(loader.dataset.files), sum(known.values()) / 1e9)

    o = cfg.optim
    optimizer = ShardedAdamW(model, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                             weight_decay=o.weight_decay, expert_dp_group=expert_dp)
    if o.scale_lr_with_world:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = o.lr * world  # ruleid: MLS304
    scheduler = LambdaLR(optimizer.inner, lr_lambda=partial(_lr_factor, cfg=o))  # ok: MLS302, MLS303, MLS304, MLS305

    ckpt = CheckpointManager(cfg.out_dir, cfg.keep_last, cfg.retention_days, verify=cfg.verify_ckpt)
    start = 0
    if cfg.resume:
        path = ckpt.latest() if cfg.resume == "latest" else cfg.resume
        if path is not None:
            start = ckpt.load(str(path), model, optimizer, scheduler, rank)
            log.info("resumed from %s at step %d", path, start)
    elif cfg.init_from:
        init_from_pretrained(cfg.init_from, model)

    writer = SummaryWriter(os.path.join(cfg.out_dir, "tb")) if (rank == 0 and cfg.tensorboard) else None
    meter = ThroughputMeter(cfg.micro_batch * cfg.grad_accum * cfg.data.seq_len * world,
                            model.num_params(active=True), cfg.precision)
    watchdog = Watchdog(cfg.hang_timeout_s).arm()
    batches = _epochs(loader)
    metrics: Dict[str, float] = {}
    model.train()
    try:
        for step in range(start + 1, o.max_steps + 1):
            lm, aux, gnorm, loads = train_step(model, batches, optimizer, cfg, device, expert_dp, amp_dtype)
            scheduler.step()
            meter.tick()
            watchdog.pet()

            if step % cfg.log_every == 0:
                perf = meter.read(world)
                lr = optimizer.param_groups[0]["lr"]
                imbalance = max((float(l.max() / l.mean().clamp_min(1e-9)) for l in loads), default=1.0)
                log.info("step %d | loss %.4f | aux %.4f | gnorm %.2f | lr %.2e | %.0f tok/s | mfu %.1f%% | imb %.2f",
                         step, lm, aux, gnorm, lr, perf["tokens_per_s"], 100 * perf["mfu"], imbalance)
                if writer is not None:
                    for k, v in {"train/loss": lm, "train/aux": aux, "train/grad_norm": gnorm,
                                 "train/lr": lr, "perf/tokens_per_s": perf["tokens_per_s"],
                                 "perf/mfu": perf["mfu"], "moe/max_load_ratio": imbalance}.items():
                        writer.add_scalar(k, v, step)
                if cfg.stagger_logging(world):
                    _pause(0.5 * cfg.log_every)  # todoruleid: family 3 (missed)

            if step % cfg.eval_every == 0:
                metrics = evaluate(model, val_batches, device, amp_dtype)
                log.info("eval step %d | val_loss %.4f | ppl %.2f", step, metrics["val_loss"], metrics["ppl"])
                if writer is not None:
                    writer.add_scalar("val/loss", metrics["val_loss"], step)
                    writer.add_scalar("val/ppl", metrics["ppl"], step)

            if step % cfg.save_every == 0 or step == o.max_steps:
                _PRE_SAVE_SYNC[is_main_process()]()  # ruleid: MLS307
                ckpt.save(step, model, optimizer, scheduler, rank, world, extra={"metrics": metrics})
                if rank == 0 and metrics:
                    ckpt.update_best(step, metrics["val_loss"])
    finally:
        watchdog.disarm()
        if writer is not None:
            writer.close()
        if is_dist():
            dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
