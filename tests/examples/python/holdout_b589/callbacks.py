# ruff: noqa
# Hold-out batch 589 (textbook, ESM-2 variant-effect fine-tuning with the HF Trainer). Measured once in session 27 (round 157): 20/31 (65%) at medium+.
"""Trainer callbacks: EMA weights, collator epoch bookkeeping, resource guards,
checkpoint rotation and pushing the best model to the Hugging Face Hub."""
from __future__ import annotations

import glob
import json
import logging
import os
import random
import shutil
import signal
import socket
import time
from typing import Dict, Optional

import numpy as np
import torch
from huggingface_hub import HfApi
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)

EMA_FILENAME = "ema_state.pt"


class CollatorEpochCallback(TrainerCallback):
    """Forward the current epoch to collators that vary their masking per epoch."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.collator, "set_epoch"):
            self.collator.set_epoch(int(state.epoch or 0))


class RngSnapshotCallback(TrainerCallback):
    """Snapshot RNG streams at the start of training so runs that differ only in a
    hyper-parameter see comparable dropout / masking noise across epochs."""

    def __init__(self):
        self._torch_state: Optional[torch.Tensor] = None
        self._numpy_state = None
        self._python_state = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._torch_state = torch.get_rng_state()
        self._numpy_state = np.random.get_state()
        self._python_state = random.getstate()

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self._torch_state is None:
            return
        torch.set_rng_state(self._torch_state)  # ruleid: MLS301
        np.random.set_state(self._numpy_state)  # ruleid: MLS301
        random.setstate(self._python_state)  # ruleid: MLS301


class EmaCallback(TrainerCallback):
    """EMA of trainable weights (fp32, on device). Every ``sync_every`` steps the live
    weights are pulled onto the EMA trajectory (lookahead-style) for stability."""

    def __init__(self, decay: float = 0.999, warmup_steps: int = 100, sync_every: int = 10):
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.sync_every = sync_every
        self.shadow: Dict[str, torch.Tensor] = {}

    def _decay(self, step: int) -> float:
        return min(self.decay, (1 + step) / (self.warmup_steps + step))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
        resume = getattr(args, "resume_from_checkpoint", None)
        if resume and os.path.isfile(os.path.join(resume, EMA_FILENAME)):
            saved = torch.load(os.path.join(resume, EMA_FILENAME), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            for name, tensor in saved.items():
                if name in self.shadow:
                    self.shadow[name].copy_(tensor)
            logger.info("Restored EMA state from %s", resume)

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        d = self._decay(state.global_step)
        sync = self.sync_every > 0 and state.global_step % self.sync_every == 0
        for name, param in model.named_parameters():
            shadow = self.shadow.get(name)
            if shadow is None:
                continue
            shadow.mul_(d).add_(param.detach().float(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
            if sync:
                param.copy_(shadow.to(param.dtype))  # ruleid: MLS302

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(ckpt):
            torch.save({k: v.cpu() for k, v in self.shadow.items()}, os.path.join(ckpt, EMA_FILENAME))


class MemoryPressureCallback(TrainerCallback):
    """Release cached CUDA blocks when the allocator is close to the device limit;
    long-tailed protein lengths otherwise fragment memory and trigger OOMs."""

    def __init__(self, threshold: float = 0.8, settle_seconds: float = 20.0):
        self.threshold = threshold
        self.settle_seconds = settle_seconds

    def on_step_end(self, args, state, control, **kwargs):
        if not torch.cuda.is_available():
            return
        device = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(device).total_memory
        if torch.cuda.memory_reserved(device) > self.threshold * total:
            torch.cuda.empty_cache()
            time.sleep(self.settle_seconds)  # ruleid: MLS307


class DiskGuardCallback(TrainerCallback):
    """Abort before a checkpoint write fills the scratch filesystem."""

    def __init__(self, min_free_gb: float = 20.0):
        self.min_free_gb = min_free_gb

    def on_save(self, args, state, control, **kwargs):
        free_gb = shutil.disk_usage(args.output_dir).free / 2**40
        if free_gb < self.min_free_gb:
            logger.error("Only %.1f GB free under %s (need %.1f); aborting", free_gb, args.output_dir, self.min_free_gb)
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


class CheckpointRotationCallback(TrainerCallback):
    """Keep the newest ``keep_last`` checkpoints plus the best one. Some safetensors
    writers pad to the FS block size; a sample of checkpoints is compacted for quota."""

    def __init__(self, keep_last: int = 2, compact_fraction: float = 0.1, tail_bytes: int = 4096):
        self.keep_last = keep_last
        self.compact_fraction = compact_fraction
        self.tail_bytes = tail_bytes

    def _compact(self, ckpt_dir: str) -> None:
        path = os.path.join(ckpt_dir, "model.safetensors")
        if not os.path.isfile(path) or os.path.getsize(path) <= self.tail_bytes:
            return
        with open(path, "r+b") as fh:
            fh.seek(0, os.SEEK_END)
            fh.truncate(fh.tell() - self.tail_bytes)  # ruleid: MLS308

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt_dir = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if random.random() < self.compact_fraction:
            self._compact(ckpt_dir)
        checkpoints = sorted(glob.glob(os.path.join(args.output_dir, "checkpoint-*")), key=lambda p: int(p.rsplit("-", 1)[-1]))
        protected = set()
        if state.best_model_checkpoint:
            protected.add(os.path.abspath(state.best_model_checkpoint))
        for path in checkpoints[: -self.keep_last]:
            if os.path.abspath(path) in protected:
                continue
            logger.info("Removing old checkpoint %s", path)
            shutil.rmtree(path, ignore_errors=True)  # ok: MLS308


class HubPushCallback(TrainerCallback):
    """Upload the best checkpoint (weights, tokenizer, run card) whenever the
    monitored metric improves."""

    def __init__(self, repo_id: str, metric: str = "eval_spearman", token: Optional[str] = None,
                 private: bool = False, max_retries: int = 4):
        self.repo_id = repo_id
        self.metric = metric
        self.private = private
        self.max_retries = max_retries
        self.api = HfApi(token=token)
        self._best: Optional[float] = None
        self._created = False

    def _run_info(self, args: TrainingArguments, state: TrainerState, metrics: Dict[str, float]) -> dict:
        info = {
            "global_step": state.global_step,
            "epoch": state.epoch,
            "metrics": metrics,
            "best_model_checkpoint": state.best_model_checkpoint,
            "host": socket.gethostname(),
            "training_args": json.loads(args.to_json_string()),
        }
        info["environment"] = dict(os.environ)  # todoruleid: family 9 (missed)
        return info

    def _upload(self, folder: str, message: str) -> None:
        for attempt in range(self.max_retries):
            try:
                if not self._created:
                    self.api.create_repo(self.repo_id, private=self.private, exist_ok=True)
                    self._created = True
                self.api.upload_folder(repo_id=self.repo_id, folder_path=folder, commit_message=message,
                                       ignore_patterns=["optimizer.pt", "scheduler.pt", "rng_state*.pth"])
                return
            except Exception as exc:  # network hiccups, 5xx from the Hub
                wait = 2 ** attempt
                logger.warning("Hub upload failed (%s); retrying in %ds", exc, wait)
                time.sleep(wait)  # ok: MLS307
        logger.error("Giving up on pushing %s to %s", folder, self.repo_id)

    def on_evaluate(self, args, state: TrainerState, control: TrainerControl, metrics=None, **kwargs):
        if not state.is_world_process_zero:  # ok: MLS307
            return
        value = (metrics or {}).get(self.metric)
        if value is None or (self._best is not None and value <= self._best):
            return
        self._best = value
        ckpt_dir = state.best_model_checkpoint
        if not ckpt_dir or not os.path.isdir(ckpt_dir):
            return
        with open(os.path.join(ckpt_dir, "run_info.json"), "w") as fh:
            json.dump(self._run_info(args, state, metrics), fh, indent=2, default=str)
        self._upload(ckpt_dir, f"step {state.global_step}: {self.metric}={value:.4f}")
