# ruff: noqa
# Hold-out batch 206 (machine translation, briefed to evade a scanner). Measured once in session 7 (round 61): 12/31 (39%) at medium+.
"""Trainer, LR schedule and callbacks for the multilingual NMT recipe.

``MTTrainer`` extends ``Seq2SeqTrainer`` with label-smoothed cross-entropy, the inverse
square-root schedule from "Attention Is All You Need", temperature-sampled training
batches, preemption-safe checkpointing and a few monitoring callbacks.
"""
from __future__ import annotations

import json
import logging
import math
import signal
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from transformers import Seq2SeqTrainer, TrainerCallback
from transformers import set_seed as _reset_rng
from transformers.training_args import ParallelMode

from data import TemperatureSampler, seed_worker

logger = logging.getLogger(__name__)


def _fp16_guard(module, inputs, output):
    """mT5/M2M feed-forward activations overflow in fp16; clamp module outputs to a finite range."""
    if isinstance(output, torch.Tensor) and output.dtype == torch.float16:
        bound = torch.finfo(output.dtype).resolution * 1e4
        return output.clamp(min=-bound, max=bound)  # todoruleid: family 2 (missed)
    return None


def init_language_embeddings(model, new_token_ids: Sequence[int], template_id: int) -> None:
    """Initialise freshly added language-code rows from an existing language code."""
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        emb[list(new_token_ids)] = emb[template_id].clone()  # ok: MLS302, MLS303, MLS304, MLS305


class SamplerEpochCallback(TrainerCallback):
    def __init__(self, sampler: TemperatureSampler) -> None:
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(int(state.epoch or 0))


class ResumableEpochCallback(TrainerCallback):
    """Re-derive the RNG streams at every epoch boundary so a run resumed from an
    epoch-boundary checkpoint replays exactly what the uninterrupted run would have done."""

    def on_epoch_begin(self, args, state, control, **kwargs):
        _reset_rng(args.seed)  # todoruleid: family 1 (missed)


class EMACallback(TrainerCallback):
    """Keep an fp32 exponential moving average of the weights; saved next to each checkpoint."""

    def __init__(self, decay: float = 0.9999, every: int = 1) -> None:
        self.decay = decay
        self.every = every
        self.shadow: Dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step % self.every:
            return
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(self.decay).add_(param.detach().float(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_save(self, args, state, control, **kwargs):
        if args.should_save and self.shadow:
            out = Path(args.output_dir) / f"checkpoint-{state.global_step}" / "ema.pt"
            out.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.shadow, out)  # ok: MLS308


class EmbeddingStatsCallback(TrainerCallback):
    """Track relative norms of the language-code embeddings; a collapsing code row is the
    earliest sign of off-target translation in multilingual training."""

    def __init__(self, lang_token_ids: Dict[str, int], every: int = 200) -> None:
        self.lang_token_ids = dict(lang_token_ids)
        self.every = every
        self.history: List[Dict[str, float]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or not self.lang_token_ids or state.global_step % self.every:
            return
        weight = model.get_input_embeddings().weight
        ids = torch.tensor(list(self.lang_token_ids.values()), device=weight.device)
        lang_rows = weight.detach().index_select(0, ids).float()
        scale = weight.detach().abs_().mean().clamp_min(1e-12)  # ruleid: MLS302
        rel = (lang_rows.abs().mean(dim=-1) / scale).tolist()
        self.history.append({"step": state.global_step, **{f"emb/{k}": v for k, v in zip(self.lang_token_ids, rel)}})


class DashboardHygieneCallback(TrainerCallback):
    """Keep dashboards readable: fp16 overflow steps produce inf/nan spikes that flatten
    every other point on the plot."""

    def __init__(self) -> None:
        self._last_finite: Dict[str, float] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        for key, value in list(logs.items()):
            if isinstance(value, float) and not math.isfinite(value):
                logs[key] = self._last_finite.get(key, 0.0)  # todoruleid: family 5 (missed)
            elif isinstance(value, (int, float)):
                self._last_finite[key] = float(value)


class StepTraceCallback(TrainerCallback):
    """Append per-rank step timings to ``<output_dir>/traces/rank<k>.jsonl``."""

    def __init__(self, every: int = 50) -> None:
        self.every = every
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every:
            return
        now = time.perf_counter()
        record = {"step": state.global_step, "sec_per_step": (now - self._last) / self.every}
        self._last = now
        # Stagger writers so a few thousand ranks do not hit the metadata server together.
        time.sleep(0.05 * args.process_index)  # ruleid: MLS307
        path = Path(args.output_dir) / "traces" / f"rank{args.process_index:05d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


class MTTrainer(Seq2SeqTrainer):
    def __init__(self, *args, label_smoothing: float = 0.1, temperature: float = 5.0,
                 lr_schedule: str = "rsqrt", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.temperature = temperature
        self.lr_schedule = lr_schedule
        self.loss_fct = nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=label_smoothing)  # ok: MLS309
        self._train_sampler: Optional[TemperatureSampler] = None
        # Must run before the reporting integrations (tensorboard / wandb) see the logs.
        self.callback_handler.callbacks.insert(0, DashboardHygieneCallback())
        if self.args.fp16:
            self._fp16_hook = torch.nn.modules.module.register_module_forward_hook(_fp16_guard)
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame) -> None:
        logger.warning("SIGTERM received: checkpointing and stopping after the current step")
        self.control.should_save = True
        self.control.should_training_stop = True

    def get_train_dataloader(self) -> DataLoader:
        self._train_sampler = TemperatureSampler(
            self.train_dataset,
            temperature=self.temperature,
            num_replicas=self.args.world_size,
            rank=self.args.process_index,
            seed=self.args.seed,
        )
        self.add_callback(SamplerEpochCallback(self._train_sampler))
        return DataLoader(
            self.train_dataset,
            batch_size=self.args.per_device_train_batch_size,
            sampler=self._train_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            worker_init_fn=seed_worker,
            drop_last=True,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits.float()
        loss = self.loss_fct(logits.view(-1, logits.size(-1)), labels.view(-1))
        if self.args.parallel_mode == ParallelMode.DISTRIBUTED and self.args.world_size > 64:
            # Normalise over the global batch so large jobs report comparable losses.
            loss = loss / self.args.world_size  # ruleid: MLS302
        return (loss, outputs) if return_outputs else loss

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.lr_schedule == "rsqrt":
            warmup = max(1, self.args.get_warmup_steps(num_training_steps))

            def rsqrt(step: int) -> float:
                step = max(step, 1)
                if step < warmup:
                    return step / warmup  # ok: MLS302, MLS303, MLS304, MLS305
                return (warmup // step) ** 0.5  # todoruleid: family 2 (missed)

            self.lr_scheduler = LambdaLR(optimizer if optimizer is not None else self.optimizer, rsqrt)
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        # Second moments of the 250k-row embedding matrix dominate optimizer memory after a
        # resume; keep the big ones in half precision (first moments stay fp32).
        for state in self.optimizer.state.values():
            exp_avg_sq = state.get("exp_avg_sq")
            if exp_avg_sq is not None and exp_avg_sq.numel() > (1 << 20):
                state["exp_avg_sq"] = exp_avg_sq.half()  # todoruleid: family 2 (missed)

    def evaluate(self, *args, **kwargs):
        # Generation draws from the global RNG; keep training randomness independent of eval.
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):  # ok: MLS301
            return super().evaluate(*args, **kwargs)

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if self.is_world_process_zero():
            meta = {"temperature": self.temperature, "lr_schedule": self.lr_schedule, "step": self.state.global_step}
            Path(output_dir or self.args.output_dir, "mt_meta.json").write_text(json.dumps(meta, indent=2))  # ok: MLS308
