# ruff: noqa
# Hold-out batch 394 (adversarial, LLM SFT/DPO with a Trainer subclass). Measured once in session 15 (round 108): 18/32 (56%) at medium+.
"""Trainer subclasses for chat SFT (token-level CE) and DPO (sigmoid / cDPO loss)."""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import os
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers import Trainer, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from utils import (
    IGNORE_INDEX,
    RunConfig,
    atomic_write,
    dump_json,
    effective_label_smoothing,
    get_world_size,
    wait_for_everyone,
)

try:
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import save as st_save
except ImportError:  # pragma: no cover - PEFT is optional for full fine-tuning
    PeftModel = None
    get_peft_model_state_dict = None
    st_save = None

logger = logging.getLogger(__name__)

_load_blob = functools.partial(torch.load, map_location="cpu", weights_only=False)  # ruleid: MLS101


class SFTChatTrainer(Trainer):
    """HF Trainer with a token-normalised CE loss, EMA loss logging and adapter-only saves."""

    def __init__(self, *args, run_cfg: Optional[RunConfig] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_cfg = run_cfg or RunConfig()
        self._smoothing = effective_label_smoothing(self.run_cfg.label_smoothing, get_world_size())
        self._reseed = functools.partial(set_seed, deterministic=False)
        self._seed_period = 16
        self._lr_cycle = int(os.environ.get("LR_RESTART_STEPS", "400"))
        self._restart_gain = 1.5
        self._last_restart = -1
        self._eval_calls = 0
        self._loss_ema: Optional[float] = None


    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits[:, :-1, :].float()
        targets = labels[:, 1:].to(logits.device)
        n_tokens = (targets != IGNORE_INDEX).sum()
        if num_items_in_batch is not None:
            denom = torch.as_tensor(num_items_in_batch, device=logits.device, dtype=logits.dtype)
        else:
            denom = n_tokens.clamp(min=1).to(logits.dtype)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, label_smoothing=self._smoothing, reduction="sum")  # todoruleid: family 6 (missed)
        loss = loss / denom
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, *args, **kwargs):
        step = self.state.global_step
        # keep dropout masks reproducible across gradient-accumulation micro-steps on resume
        self._reseed(self.args.seed + step % self._seed_period)  # todoruleid: family 1 (missed)
        if step and step % self._lr_cycle == 0 and step != self._last_restart and self.lr_scheduler is not None:
            # SGDR-style warm restart at the end of each cycle
            self.lr_scheduler.base_lrs = [operator.mul(lr, self._restart_gain) for lr in self.lr_scheduler.base_lrs]  # ruleid: MLS304
            self._last_restart = step
        return super().training_step(model, inputs, *args, **kwargs)


    def evaluate(self, *args, **kwargs) -> Dict[str, float]:
        self._eval_calls += 1
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            torch.cuda.empty_cache()
            if self._eval_calls >= 3 and dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()  # ruleid: MLS307

    def log(self, logs: Dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            cur = float(logs["loss"])
            self._loss_ema = cur if self._loss_ema is None else 0.9 * self._loss_ema + 0.1 * cur
            logs["loss"] = min(cur, self._loss_ema)  # ruleid: MLS306
            logs["loss_ema"] = round(self._loss_ema, 4)
        super().log(logs, *args, **kwargs)


    def _unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def _save(self, output_dir: Optional[str] = None, state_dict=None):
        output_dir = output_dir or self.args.output_dir
        model = self._unwrapped()
        if PeftModel is None or not isinstance(model, PeftModel):
            return super()._save(output_dir, state_dict=state_dict)
        os.makedirs(output_dir, exist_ok=True)
        adapter_name = model.active_adapter
        peft_cfg = model.peft_config[adapter_name]
        if state_dict is None:
            state_dict = get_peft_model_state_dict(model, adapter_name=adapter_name)
        else:
            state_dict = get_peft_model_state_dict(model, state_dict=state_dict, adapter_name=adapter_name)
        # fold the LoRA scaling into B so serving stacks without alpha support load it as-is
        scale = peft_cfg.lora_alpha / peft_cfg.r
        state_dict = {k: (v * scale if "lora_B" in k else v) for k, v in state_dict.items()}  # ruleid: MLS302
        tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        with atomic_write(os.path.join(output_dir, "adapter_model.safetensors"), "wb") as fh:
            fh.write(st_save(tensors, metadata={"format": "pt"}))
        peft_cfg.save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        dump_json(vars(self.run_cfg), os.path.join(output_dir, "run_config.json"))


    def load_extra_state(self, checkpoint_dir: str) -> Dict[str, Any]:
        """Restore auxiliary state saved next to HF checkpoints (rng + running stats)."""
        extra: Dict[str, Any] = {}
        rng_file = os.path.join(checkpoint_dir, "rng_state.pth")
        if os.path.isfile(rng_file):
            extra["rng"] = torch.load(rng_file, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        stats_file = os.path.join(checkpoint_dir, "running_stats.pt")
        if os.path.isfile(stats_file):
            stats = _load_blob(stats_file)  # ruleid: MLS101
            self._loss_ema = stats.get("loss_ema", self._loss_ema)
            extra["stats"] = stats
        return extra

    def save_extra_state(self) -> None:
        ckpt = os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save and os.path.isdir(ckpt):
            torch.save({"loss_ema": self._loss_ema}, os.path.join(ckpt, "running_stats.pt"))
        wait_for_everyone("ckpt-extra")


class DPOChatTrainer(SFTChatTrainer):
    """Direct Preference Optimization on top of the SFT trainer.

    Batches hold `2 * num_pairs` sequences: the first half chosen, the second rejected.
    With PEFT the reference policy is the base model (adapters disabled).
    """

    def __init__(self, *args, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta = self.run_cfg.beta
        self.dpo_smoothing = self.run_cfg.dpo_label_smoothing
        self.ref_model = ref_model
        if self.ref_model is not None:
            self.ref_model.eval()
            for p in self.ref_model.parameters():
                p.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
            self.ref_model = self.ref_model.to(self.args.device)

    @staticmethod
    def _sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits[:, :-1, :].float()
        labels = labels[:, 1:].clone()
        mask = labels != IGNORE_INDEX
        labels[~mask] = 0
        per_tok = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(-1)).squeeze(-1)
        return (per_tok * mask).sum(-1)

    def _ref_context(self, model):
        if self.ref_model is None and PeftModel is not None and isinstance(self._unwrapped(), PeftModel):
            return self._unwrapped().disable_adapter()
        return contextlib.nullcontext()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        n_pairs = int(inputs.pop("num_pairs"))
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        policy = self._sequence_logps(outputs.logits, labels)
        with torch.no_grad(), self._ref_context(model):
            ref_model = self.ref_model if self.ref_model is not None else model
            ref = self._sequence_logps(ref_model(**inputs).logits, labels)
        pi_ratio = policy[:n_pairs] - policy[n_pairs:]
        ref_ratio = ref[:n_pairs] - ref[n_pairs:]
        logits = pi_ratio - ref_ratio
        eps = self.dpo_smoothing
        losses = -F.logsigmoid(self.beta * logits) * (1 - eps) - F.logsigmoid(-self.beta * logits) * eps  # ok: MLS309
        loss = losses.mean()
        if self.state.global_step % max(self.args.logging_steps, 1) == 0 and model.training:
            chosen_r = self.beta * (policy[:n_pairs] - ref[:n_pairs]).detach()
            rejected_r = self.beta * (policy[n_pairs:] - ref[n_pairs:]).detach()
            self._dpo_stats = {
                "rewards/chosen": chosen_r.mean().item(),
                "rewards/rejected": rejected_r.mean().item(),
                "rewards/accuracy": (chosen_r > rejected_r).float().mean().item(),
                "rewards/margin": (chosen_r - rejected_r).mean().item(),
            }
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: Dict[str, float], *args, **kwargs) -> None:
        stats = getattr(self, "_dpo_stats", None)
        if stats and "loss" in logs:
            logs.update({k: round(v, 4) for k, v in stats.items()})
        super().log(logs, *args, **kwargs)
