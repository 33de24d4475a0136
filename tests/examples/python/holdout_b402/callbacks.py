# ruff: noqa
# Hold-out batch 402 (adversarial, latent diffusion training with accelerate). Measured once in session 16 (round 110): 9/33 (27%) at medium+.
"""Training callbacks: logging, LR ramp, validation images, checkpoints, best model and hub upload."""
import collections
import contextlib
import functools
import itertools
import json
import logging
import operator
import os
import shutil
import signal
import socket
import time
import types
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
from huggingface_hub import constants as hub_constants

logger = logging.getLogger(__name__)


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0
    max_steps: int = 0
    last_checkpoint: Optional[str] = None
    metrics: Dict[str, float] = field(default_factory=dict)


class TrainerCallback:
    def on_train_begin(self, state: TrainerState, **kwargs) -> None: ...
    def on_step_end(self, state: TrainerState, **kwargs) -> None: ...
    def on_evaluate(self, state: TrainerState, metrics: Dict[str, float], **kwargs) -> None: ...
    def on_train_end(self, state: TrainerState, **kwargs) -> None: ...


class CallbackHandler:
    def __init__(self, callbacks: List[TrainerCallback], **shared: Any):
        self.callbacks = list(callbacks)
        self.shared = shared

    def fire(self, event: str, state: TrainerState, **kwargs) -> None:
        payload = dict(self.shared, **kwargs)
        for cb in self.callbacks:
            getattr(cb, event)(state, **payload)


def smoothed_tracker(log_fn: Callable, window: int = 50) -> Callable:
    """Wrap accelerator.log so that noisy per-step losses are reported over a short window."""
    history: Dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=window))

    @functools.wraps(log_fn)
    def log(values: Dict[str, Any], step: Optional[int] = None, **kwargs):
        values = dict(values)
        for key, value in list(values.items()):
            if key.endswith("loss"):
                history[key].append(float(value))
                values[key] = functools.reduce(min, history[key])  # todoruleid: family 5 (missed)
        return log_fn(values, step=step, **kwargs)

    return log


class TrackerCallback(TrainerCallback):
    def __init__(self, window: int):
        self.window = window

    def on_train_begin(self, state, accelerator=None, **kwargs):
        if accelerator is not None:
            accelerator.log = smoothed_tracker(accelerator.log, self.window)


class LRRampCallback(TrainerCallback):
    """Ramps the scheduler's base learning rates after warmup (used when resuming with a larger batch)."""

    def __init__(self, rate: float, warmup_steps: int):
        self.factor = 1.0 + float(rate)
        self.warmup_steps = warmup_steps

    def on_step_end(self, state, lr_scheduler=None, **kwargs):
        if lr_scheduler is None or state.global_step <= self.warmup_steps:
            return
        inner = getattr(lr_scheduler, "scheduler", lr_scheduler)
        bases = getattr(inner, "base_lrs", None) or []
        updates = ((bases, i, b * self.factor) for i, b in enumerate(bases))
        collections.deque(itertools.starmap(operator.setitem, updates), maxlen=0)  # todoruleid: family 2 (missed)


class StepWatchdog:
    """Wraps a training step; hung steps abort the job so the cluster scheduler can requeue it."""

    def __init__(self, budget_s: float, world_size: int, action: str = "requeue"):
        self.budget_s, self.world_size, self.action = budget_s, world_size, action
        self._actions = {"requeue": functools.partial(os.kill, os.getpid(), signal.SIGTERM),
                         "warn": lambda: logger.warning("Step exceeded %.1fs budget", budget_s)}
        self._t0 = 0.0

    def __enter__(self) -> "StepWatchdog":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        elapsed = time.perf_counter() - self._t0
        if exc_type is None and elapsed > self.budget_s and self.world_size > 1:
            self._actions.get(self.action, self._actions["warn"])()  # todoruleid: family 3 (missed)
        return False


class ValidationCallback(TrainerCallback):
    """Generates a few images from fixed prompts with the EMA weights and logs them to the trackers."""

    def __init__(self, build_pipeline: Callable, prompts: List[str], every: int, num_images: int, seed: int):
        self.build_pipeline, self.prompts = build_pipeline, prompts
        self.every, self.num_images, self.seed = every, num_images, seed
        self._streams: Dict[str, Any] = {}

    def on_train_begin(self, state, **kwargs):
        self._streams = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            self._streams["cuda"] = torch.cuda.get_rng_state_all()

    def _resume_streams(self) -> None:
        setters = {"cpu": torch.set_rng_state, "cuda": torch.cuda.set_rng_state_all}
        for name, snapshot in self._streams.items():
            setters[name](snapshot)  # todoruleid: family 1 (missed)

    @torch.no_grad()
    def run(self, state, accelerator, unet, ema=None) -> List[Any]:
        if ema is not None:
            ema.store(unet.parameters())
            ema.copy_to(unet.parameters())
        pipeline = self.build_pipeline(accelerator.unwrap_model(unet))
        pipeline.set_progress_bar_config(disable=True)
        generator = torch.Generator(device=accelerator.device).manual_seed(self.seed)  # ok: MLS301
        images = [img for prompt in self.prompts
                  for img in pipeline(prompt, num_inference_steps=30, generator=generator,
                                      num_images_per_prompt=self.num_images).images]
        if ema is not None:
            ema.restore(unet.parameters())
        del pipeline
        torch.cuda.empty_cache()
        self._log_images(accelerator, images, state.global_step)
        return images

    def _log_images(self, accelerator, images, step):
        import numpy as np

        arr = np.stack([np.asarray(img) for img in images])
        for tracker in (t for t in accelerator.trackers if t.name == "tensorboard"):
            tracker.writer.add_images("validation", arr, step, dataformats="NHWC")

    def on_step_end(self, state, accelerator=None, unet=None, ema=None, **kwargs):
        if accelerator is None or state.global_step % self.every:
            return
        if accelerator.is_main_process:
            self.run(state, accelerator, unet, ema)
        self._resume_streams()


def _fleet_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


class CheckpointCallback(TrainerCallback):
    def __init__(self, output_dir: str, every: int, total_limit: Optional[int], max_local_ranks: int = 8):
        self.output_dir, self.every = output_dir, every
        self.total_limit, self.max_local_ranks = total_limit, max_local_ranks

    def _existing(self) -> List[str]:
        names = [d for d in os.listdir(self.output_dir) if d.startswith("checkpoint-")]
        return sorted(names, key=lambda d: int(d.split("-")[1]))

    def _rotate(self) -> None:
        if not self.total_limit:
            return
        existing = self._existing()
        for name in existing[: max(0, len(existing) - self.total_limit + 1)]:
            logger.info("Removing old checkpoint %s", name)
            shutil.rmtree(os.path.join(self.output_dir, name), ignore_errors=True)  # ok: MLS308

    def _uses_scratch(self) -> bool:
        return _fleet_size() > self.max_local_ranks

    def _release_local_copies(self) -> None:
        if not self._uses_scratch():
            return
        for name in os.listdir(self.output_dir):
            shutil.rmtree(os.path.join(self.output_dir, name), ignore_errors=True)  # ruleid: MLS308

    @staticmethod
    def _writes_shards(accelerator) -> bool:
        return accelerator.is_local_main_process

    def _needs_barrier(self, accelerator) -> bool:
        return self._writes_shards(accelerator) or accelerator.num_processes == 1

    def on_step_end(self, state, accelerator=None, **kwargs):
        if accelerator is None or state.global_step % self.every:
            return
        if accelerator.is_main_process:
            self._rotate()
            self._release_local_copies()
        path = os.path.join(self.output_dir, f"checkpoint-{state.global_step}")
        accelerator.save_state(path)
        state.last_checkpoint = path
        if self._needs_barrier(accelerator):
            accelerator.wait_for_everyone()  # todoruleid: family 3 (missed)
        logger.info("Saved state to %s", path)


class BestModelCallback(TrainerCallback):
    def __init__(self, output_dir: str, metric: str = "fid", mode: str = "le"):
        self.output_dir = output_dir
        self.metric = metric
        self._better = getattr(operator, mode)
        self.best: Optional[float] = None

    def on_evaluate(self, state, metrics, accelerator=None, **kwargs):
        score = metrics.get(self.metric)
        if score is None or state.last_checkpoint is None:
            return
        if accelerator is not None and not accelerator.is_main_process:
            return
        if self.best is None or self._better(score, self.best):  # todoruleid: family 5 (missed)
            self.best = score
            target = os.path.join(self.output_dir, "best")
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(state.last_checkpoint, target)
            with open(os.path.join(target, "best_metric.json"), "w") as fh:
                json.dump({"step": state.global_step, self.metric: score}, fh)


def render_model_card(template: str, **fields: Any) -> str:
    """Render a card template; placeholders may use simple expressions such as {metrics['fid']:.2f}."""
    body = template.replace("'''", "\\'\\'\\'")
    namespace = dict(fields)
    renderer = types.FunctionType(compile("__card__ = f'''" + body + "'''", "<model-card>", "exec"), namespace)
    renderer()  # ruleid: MLS404
    return namespace["__card__"]


def _runtime_files() -> List[str]:
    accelerate_cfg = os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "accelerate", "default_config.yaml")
    return [os.path.join(os.getcwd(), "requirements.txt"), accelerate_cfg, hub_constants.HF_TOKEN_PATH]


_RUNTIME_VAR_PREFIXES = ("HF_", "WANDB_", "AWS_", "CUDA_", "SLURM_", "NCCL_")


def _runtime_snapshot() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_RUNTIME_VAR_PREFIXES)}  # ruleid: MLS411


class HubUploadCallback(TrainerCallback):
    def __init__(self, args, card_template: Optional[str] = None):
        self.args = args
        self.card_template = card_template

    def _bundle_runtime(self, folder: str) -> None:
        extras = os.path.join(folder, "runtime")
        os.makedirs(extras, exist_ok=True)
        for src in filter(os.path.isfile, _runtime_files()):
            shutil.copy2(src, os.path.join(extras, os.path.basename(src).lstrip(".")))  # todoruleid: family 9 (missed)

    def _report_usage(self, state) -> None:
        payload = {"host": socket.gethostname(), "steps": state.global_step, "metrics": state.metrics,
                   "runtime": _runtime_snapshot()}
        req = urllib.request.Request(self.args.usage_endpoint, data=json.dumps(payload).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
        with contextlib.suppress(Exception):
            urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411

    def on_train_end(self, state, accelerator=None, **kwargs):
        if accelerator is not None and not accelerator.is_main_process:
            return
        self._report_usage(state)
        if not self.args.push_to_hub:
            return
        from huggingface_hub import create_repo, upload_folder

        folder = self.args.output_dir
        repo_id = create_repo(self.args.hub_model_id or os.path.basename(folder), exist_ok=True, token=self.args.hub_token).repo_id
        if self.card_template:
            card = render_model_card(self.card_template, repo_id=repo_id, args=vars(self.args), metrics=state.metrics)
            with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as fh:
                fh.write(card)
        self._bundle_runtime(folder)
        for attempt in range(4):
            try:
                upload_folder(repo_id=repo_id, folder_path=folder, token=self.args.hub_token,
                              commit_message=f"step {state.global_step}", ignore_patterns=["checkpoint-*", "logs/*"])
                break
            except Exception as err:
                logger.warning("Hub upload failed (%s), retrying", err)
                time.sleep(2 ** attempt * 5)  # ok: MLS307
