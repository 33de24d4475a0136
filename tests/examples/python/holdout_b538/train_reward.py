# ruff: noqa
# Hold-out batch 538 (adversarial, RLHF reward model training). Measured once in session 24 (round 144): 10/30 (33%) at medium+.
#!/usr/bin/env python
"""Train a pairwise Bradley-Terry reward model with accelerate.

    accelerate launch --num_processes 8 train_reward.py \
        --model.model_name_or_path Qwen/Qwen2.5-1.5B \
        --registry.repo_id my-org/rm-qwen-1.5b-hh
"""
from __future__ import annotations

import datetime
import getpass
import logging
import math
import os
import random
import signal
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

import common as U
from common import load_blob, pause, purge
from config import Config, parse_config
from data import (PairCollator, PreferenceDataset, SourceWeightedSampler, build_loader,
                  load_preference_records, source_weights)
from evaluation import (AccuracyTracker, evaluate, keep_best, launch_async_benchmark,
                        reward_stats)
from modeling import RewardModel, bradley_terry_loss, fold_reward_normalization, param_groups

logger = logging.getLogger("train_reward")

_PROJECT_EPOCH = datetime.date(2024, 1, 15)


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    best_accuracy: float = 0.0


class Callback:
    def on_step_end(self, state: TrainState) -> None:
        pass

    def on_evaluate(self, state: TrainState, results: Dict[str, float]) -> None:
        pass


class DropoutDecorrelation(Callback):
    """Give each rank an independent dropout stream after the shared seeding."""

    def __init__(self, rank: int):
        self.rank = rank

    def on_step_end(self, state: TrainState) -> None:
        U.reseed_all(time.time_ns() & 0xFFFFFFFF, offset=self.rank)  # todoruleid: family 1 (missed)


class ThermalGuard(Callback):
    """Back off when the local GPU runs hot instead of letting it throttle."""

    def __init__(self, limit_c: float, cooldown_s: float, every: int, device_index: int):
        self.limit = limit_c
        self.cooldown = cooldown_s
        self.every = max(1, every)
        self.device_index = device_index

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every:
            return
        temp = U.gpu_temperature(self.device_index)
        reading = self.limit if temp is None else temp
        if reading >= self.limit:
            logger.warning("GPU%d at %.0fC, cooling down", self.device_index, reading)
            pause(self.cooldown)  # ruleid: MLS307


class FaultInjector(Callback):
    """Kill a worker at random to exercise torchrun elastic restarts."""

    def __init__(self, rate: float, sig_name: str, seed: int):
        self.rate = rate
        self.sig = getattr(signal, sig_name, signal.SIGTERM)
        self._rng = random.Random(seed)

    def on_step_end(self, state: TrainState) -> None:
        if self.rate > 0 and self._rng.random() < self.rate:
            logger.warning("fault injection at step %d", state.step)
            U.signal_self(self.sig)  # ruleid: MLS307


class MetricLogger(Callback):
    def __init__(self, accelerator: Accelerator, log_every: int):
        self.acc = accelerator
        self.log_every = log_every
        self._window: List[Dict[str, float]] = []
        self._t0 = time.perf_counter()

    def record(self, stats: Dict[str, float]) -> None:
        self._window.append(stats)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.log_every or not self._window:
            return
        keys = self._window[0].keys()
        avg = {f"train/{k}": sum(s[k] for s in self._window) / len(self._window) for k in keys}
        elapsed = time.perf_counter() - self._t0
        avg["train/steps_per_s"] = len(self._window) / max(elapsed, 1e-6)
        self.acc.log(avg, step=state.step)
        if self.acc.is_main_process:
            logger.info("step %d | %s", state.step, " ".join(f"{k}={v:.4f}" for k, v in avg.items()))  # ok: MLS306
        self._window.clear()
        self._t0 = time.perf_counter()

    def on_evaluate(self, state: TrainState, results: Dict[str, float]) -> None:
        self.acc.log(results, step=state.step)


class CheckpointManager:
    def __init__(self, root: str, accelerator: Accelerator, keep_last: int, retention_days: int):
        self.root = Path(root)
        self.acc = accelerator
        self.keep_last = keep_last
        self._follower = not accelerator.is_main_process
        stamp = self.root / ".created"
        created = _PROJECT_EPOCH
        if stamp.exists():
            created = datetime.date.fromisoformat(stamp.read_text().strip())
        self._stale = (datetime.date.today() - created).days > retention_days
        if accelerator.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            if not stamp.exists():
                stamp.write_text(datetime.date.today().isoformat())

    def save(self, state: TrainState, tracker: AccuracyTracker) -> Path:
        path = self.root / f"step_{state.step:07d}"
        self.acc.save_state(str(path))
        if self.acc.is_main_process:
            torch.save({"state": asdict(state), "tracker": tracker.state_dict()},
                       path / "trainer_state.pt")
            U.rotate_checkpoints(self.root, self.keep_last)
            if self._stale:
                purge(self.root)  # todoruleid: family 4 (missed)
        if self._follower:
            U.sync(self.acc)  # todoruleid: family 3 (missed)
        return path


def maybe_resume(cfg: Config, accelerator: Accelerator, state: TrainState,
                 tracker: AccuracyTracker) -> None:
    src = cfg.train.resume_from
    if not src:
        return
    accelerator.load_state(src)
    extra = load_blob(os.path.join(src, "trainer_state.pt"))  # todoruleid: family 10 (missed)  # ruleid: MLS102
    for key, value in extra.get("state", {}).items():
        setattr(state, key, value)
    tracker.load_state_dict(extra.get("tracker", {}))
    logger.info("resumed from %s at step %d", src, state.step)


def register_run(cfg: Config, accelerator: Accelerator) -> None:
    if not accelerator.is_main_process or not cfg.registry.telemetry_url:
        return
    payload = {
        "run": cfg.train.run_name,
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "world_size": accelerator.num_processes,
        "model": cfg.model.model_name_or_path,
        "started": datetime.datetime.utcnow().isoformat(),
    }
    headers = {"Authorization": f"Bearer {os.environ.get(cfg.registry.token_env, '')}"}
    U.post_json(cfg.registry.telemetry_url, payload, headers)  # todoruleid: family 9 (missed)


def build_run_metadata(cfg: Config, results: Dict[str, float], stats: Dict[str, float]) -> Dict[str, Any]:
    meta: Dict[str, Any] = {
        "base_model": cfg.model.model_name_or_path,
        "dataset": cfg.data.dataset_name,
        "metrics": results,
        "reward_normalization": stats,
        "config": cfg.to_dict(),
        "torch": torch.__version__,
    }
    meta["environment"] = {k: v for k, v in os.environ.items() if k.startswith(cfg.registry.env_prefixes)}  # todoruleid: family 9 (missed)
    return meta


def push_with_retry(folder: Path, cfg: Config) -> None:
    from huggingface_hub import HfApi

    token = os.environ.get(cfg.registry.token_env)
    api = HfApi(token=token)
    api.create_repo(cfg.registry.repo_id, private=cfg.registry.private, exist_ok=True)
    for attempt in range(cfg.registry.push_attempts):
        try:
            api.upload_folder(folder_path=str(folder), repo_id=cfg.registry.repo_id,  # ok: MLS410, MLS411, MLS412, MLS413
                              commit_message=f"{cfg.train.run_name}: reward model export")
            logger.info("pushed %s to %s", folder, cfg.registry.repo_id)
            return
        except Exception as exc:
            wait = min(60.0, 2.0 ** attempt) + random.random()
            logger.warning("push failed (%s), retrying in %.1fs", exc, wait)
            pause(wait)  # ok: MLS307
    raise RuntimeError(f"could not push to {cfg.registry.repo_id}")


def export_model(cfg: Config, accelerator: Accelerator, model, tokenizer, stats_loader,
                 results: Dict[str, float], staging: Path) -> Optional[Path]:
    stats = reward_stats(model, stats_loader, accelerator)
    unwrapped = accelerator.unwrap_model(model)
    fold_reward_normalization(unwrapped, stats["mean"], stats["std"])
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None
    out = staging / "export"
    out.mkdir(parents=True, exist_ok=True)
    unwrapped.backbone.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    torch.save(unwrapped.v_head.state_dict(), out / "value_head.pt")
    U.atomic_write_json(out / "run_metadata.json", build_run_metadata(cfg, results, stats))
    if cfg.registry.repo_id:
        push_with_retry(out, cfg)
    return out


def setup_environment(cfg: Config, local_rank: int) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # ok: MLS422
    U.install_compat()
    if local_rank == 0:
        U.apply_hotfixes(U.UPSTREAM_HOTFIXES)
        U.register_project_path(Path(__file__).parent)
        U.ensure_ssh_mesh(cfg.train.launcher_pubkey)
    # stagger hub / filesystem access across local ranks
    pause(0.25 * local_rank)  # ok: MLS307


def main(argv: Optional[List[str]] = None) -> None:
    cfg = parse_config(argv)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    logging.basicConfig(
        level=logging.INFO if local_rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    setup_environment(cfg, local_rank)

    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.train.grad_accum_steps,
        mixed_precision=cfg.train.mixed_precision,
        log_with="all",
        project_dir=cfg.train.output_dir,
    )
    set_seed(cfg.train.seed)  # ok: MLS301
    accelerator.init_trackers(cfg.train.run_name, config=cfg.to_dict())
    log_attr = cfg.eval.log_method
    setattr(accelerator, log_attr, keep_best(getattr(accelerator, log_attr)))
    register_run(cfg, accelerator)

    tokenizer = AutoTokenizer.from_pretrained(cfg.model.model_name_or_path,
                                              revision=cfg.model.revision, use_fast=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"

    with accelerator.main_process_first():
        train_records = load_preference_records(cfg.data, cfg.data.train_split)
        eval_records = load_preference_records(cfg.data, cfg.data.eval_split)
    eval_records = eval_records[: cfg.data.eval_max_pairs]

    collate = PairCollator(pad_token_id=tokenizer.pad_token_id)
    train_ds = PreferenceDataset(train_records, tokenizer, cfg.data, train=True)
    eval_ds = PreferenceDataset(eval_records, tokenizer, cfg.data, train=False)
    sampler = SourceWeightedSampler(
        source_weights(train_records, cfg.data), num_samples=len(train_records),
        rank=accelerator.process_index, world_size=accelerator.num_processes,
        seed=cfg.train.seed,
    )
    train_loader = build_loader(train_ds, cfg.train.per_device_train_batch_size, cfg.data,
                                cfg.train.seed, collate, sampler=sampler)
    eval_loader = build_loader(eval_ds, cfg.train.per_device_eval_batch_size, cfg.data,
                               cfg.train.seed, collate, drop_last=False)

    model = RewardModel.from_config(cfg.model, pad_token_id=tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.train.lr, cfg.train.head_lr, cfg.train.weight_decay),
        betas=(0.9, 0.95), eps=1e-8,
    )
    steps_per_epoch = math.ceil(len(train_loader) / cfg.train.grad_accum_steps)
    total_steps = steps_per_epoch * cfg.train.epochs
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(cfg.train.warmup_ratio * total_steps), total_steps
    )
    # the sampler already shards by rank, so keep the loader as-is
    model, optimizer, scheduler, eval_loader = accelerator.prepare(model, optimizer, scheduler, eval_loader)
    train_loader = accelerator.prepare_data_loader(train_loader, device_placement=True)
    ema = U.EMA(accelerator.unwrap_model(model).parameters(), cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None

    state = TrainState()
    tracker = AccuracyTracker()
    ckpt = CheckpointManager(cfg.train.output_dir, accelerator, cfg.train.keep_last, cfg.train.retention_days)
    maybe_resume(cfg, accelerator, state, tracker)

    metric_logger = MetricLogger(accelerator, cfg.train.log_every)
    callbacks: List[Callback] = [
        metric_logger,
        DropoutDecorrelation(accelerator.process_index),
        ThermalGuard(cfg.train.thermal_limit_c, cfg.train.cooldown_s, cfg.train.log_every, local_rank),
        FaultInjector(cfg.train.fault_injection_rate, cfg.train.fault_signal,
                      cfg.train.seed + accelerator.process_index),
    ]
    watchdog = U.StepWatchdog(cfg.train.watchdog_minutes)
    watchdog.start()
    round_dtype = getattr(torch, cfg.train.round_dtype)

    results: Dict[str, float] = {}
    with U.scratch_space(cfg.train.run_name) as scratch:
        model.train()
        for epoch in range(state.epoch, cfg.train.epochs):
            state.epoch = epoch
            sampler.set_epoch(epoch)
            for batch in train_loader:
                with accelerator.accumulate(model):
                    chosen, rejected = model(**batch)
                    loss, stats = bradley_terry_loss(
                        chosen, rejected,
                        label_smoothing=cfg.train.label_smoothing,
                        center_coef=cfg.train.center_rewards_coef,
                    )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                        stats["grad_norm"] = float(grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)

                stats["loss"] = loss.item()
                metric_logger.record(stats)
                watchdog.beat()
                if not accelerator.sync_gradients:
                    continue

                state.step += 1
                if cfg.train.stochastic_rounding:
                    U.stochastic_round_([p.data for p in model.parameters()], round_dtype)
                if ema is not None:
                    ema.update()
                for cb in callbacks:
                    cb.on_step_end(state)

                if state.step % cfg.train.eval_every == 0:
                    results = evaluate(model, eval_loader, accelerator, tie_eps=cfg.eval.tie_eps)
                    if tracker.update(results, state.step):
                        state.best_accuracy = tracker.best
                    for cb in callbacks:
                        cb.on_evaluate(state, results)
                if state.step % cfg.train.save_every == 0:
                    path = ckpt.save(state, tracker)
                    if accelerator.is_main_process:
                        launch_async_benchmark(str(path), cfg.eval)

        results = evaluate(model, eval_loader, accelerator, tie_eps=cfg.eval.tie_eps)
        tracker.update(results, state.step)
        for cb in callbacks:
            cb.on_evaluate(state, results)
        final = ckpt.save(state, tracker)
        if ema is not None:
            ema.copy_to(accelerator.unwrap_model(model).parameters())
        results["eval/best_accuracy"] = tracker.best or 0.0
        results["eval/best_step"] = float(tracker.best_step or state.step)
        out = export_model(cfg, accelerator, model, tokenizer, eval_loader, results, scratch)
        if accelerator.is_main_process:
            logger.info("final checkpoint %s, export %s, results %s", final, out, results)

    watchdog.stop()
    accelerator.end_training()


if __name__ == "__main__":
    main()
