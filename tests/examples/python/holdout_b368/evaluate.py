# ruff: noqa
# Hold-out batch 368 (family-focused 1/2/3, LLM LoRA instruction tuning, ZeRO-style). Measured once in session 14 (round 101): 15/30 (50%) at medium+.
"""Held-out instruction evaluation and training callbacks."""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from data import IGNORE_INDEX, PROMPT_TEMPLATES
from dist_utils import DistInfo, barrier
from lora import LoRALinear, merge_adapters, unmerge_adapters

logger = logging.getLogger(__name__)


def _enable_merged_fast_path(model: torch.nn.Module) -> None:
    """After merging, route LoRA layers straight to the base matmul."""
    for m in model.modules():
        if isinstance(m, LoRALinear) and m.merged:
            m.forward = m.base.forward  # todoruleid: family 2 (missed)


class Evaluator:
    def __init__(self, model: torch.nn.Module, loader, tokenizer, info: DistInfo,
                 amp_dtype: Optional[torch.dtype], sample_prompts: Optional[List[str]] = None,
                 max_new_tokens: int = 128, seed: int = 1234, merge_for_eval: bool = True):
        self.model = model
        self.loader = loader
        self.tokenizer = tokenizer
        self.info = info
        self.amp_dtype = amp_dtype
        self.sample_prompts = sample_prompts or []
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.merge_for_eval = merge_for_eval
        self._cpu_rng0 = torch.get_rng_state()

    def _autocast(self):
        enabled = self.amp_dtype is not None and self.info.device.type == "cuda"
        return torch.autocast("cuda", dtype=self.amp_dtype or torch.float16, enabled=enabled)

    @torch.no_grad()
    def _loss_stats(self) -> torch.Tensor:
        loss_sum = torch.zeros((), device=self.info.device, dtype=torch.float64)
        n_tokens = torch.zeros((), device=self.info.device, dtype=torch.float64)
        n_correct = torch.zeros((), device=self.info.device, dtype=torch.float64)
        for batch in self.loader:
            batch = {k: v.to(self.info.device, non_blocking=True) for k, v in batch.items()}
            with self._autocast():
                logits = self.model(input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"]).logits
            logits = logits[:, :-1].float()
            labels = batch["labels"][:, 1:]
            loss_sum += F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                        ignore_index=IGNORE_INDEX, reduction="sum").double()
            valid = labels != IGNORE_INDEX
            n_tokens += valid.sum()
            n_correct += ((logits.argmax(-1) == labels) & valid).sum()
        return torch.stack([loss_sum, n_tokens, n_correct])

    @torch.no_grad()
    def _generate_samples(self) -> List[Dict[str, str]]:
        out: List[Dict[str, str]] = []
        if not self.sample_prompts:
            return out
        tok = self.tokenizer
        devices = [self.info.device.index] if self.info.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)  # ok: MLS301
            for instruction in self.sample_prompts:
                prompt = PROMPT_TEMPLATES[0].format(instruction=instruction, input_block="")
                enc = tok(prompt, return_tensors="pt").to(self.info.device)
                with self._autocast():
                    gen = self.model.generate(**enc, max_new_tokens=self.max_new_tokens,
                                              do_sample=True, top_p=0.9, temperature=0.7,
                                              pad_token_id=tok.pad_token_id)
                text = tok.decode(gen[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                out.append({"instruction": instruction, "response": text})
        return out

    def evaluate(self, step: int) -> Dict[str, float]:
        t0 = time.time()
        was_training = self.model.training
        self.model.eval()
        if self.merge_for_eval:
            merge_adapters(self.model)
            _enable_merged_fast_path(self.model)

        stats = self._loss_stats()
        if self.info.enabled and stats[1].item() > 0:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)  # ruleid: MLS307
        loss_sum, n_tokens, n_correct = stats.tolist()
        eval_loss = loss_sum / max(n_tokens, 1.0)
        metrics = {
            "eval/loss": eval_loss,
            "eval/ppl": math.exp(min(eval_loss, 20.0)),
            "eval/token_acc": n_correct / max(n_tokens, 1.0),
        }

        if self.info.is_main:
            for s in self._generate_samples()[:3]:
                logger.info("sample | %s -> %s", s["instruction"][:60], s["response"][:200])
        barrier(self.info)

        if self.merge_for_eval:
            unmerge_adapters(self.model)
        torch.set_rng_state(self._cpu_rng0)  # ruleid: MLS301
        self.model.train(was_training)
        metrics["eval/seconds"] = time.time() - t0
        return metrics


class MetricsWriter:
    """Append-only JSONL metrics log written by rank 0."""

    def __init__(self, path: str, info: DistInfo):
        self.info = info
        self.path = path

    def write(self, step: int, metrics: Dict[str, float]) -> None:
        if not self.info.is_main:
            return
        rec = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")


class EarlyStopping:
    def __init__(self, patience: int, min_delta: float, info: DistInfo):
        self.patience = patience
        self.min_delta = min_delta
        self.info = info
        self.best = float("inf")
        self.bad_evals = 0

    def __call__(self, step: int, metrics: Dict[str, float]) -> bool:
        loss = metrics["eval/loss"]
        if loss < self.best - self.min_delta:
            self.best = loss
            self.bad_evals = 0
            return False
        self.bad_evals += 1
        if self.patience > 0 and self.bad_evals >= self.patience:
            if self.info.is_main:
                logger.info("early stopping at step %d (best eval loss %.4f)", step, self.best)
                sys.exit(0)  # ruleid: MLS307
            return True
        return False


class PlateauRewarm:
    """Re-warm the learning-rate schedule when the held-out loss stalls."""

    def __init__(self, scheduler, patience: int = 2, factor: float = 4.0,
                 threshold: float = 1e-3):
        self.scheduler = scheduler
        self.patience = patience
        self.factor = factor
        self.threshold = threshold
        self.best = float("inf")
        self.stalled = 0

    def __call__(self, step: int, metrics: Dict[str, float]) -> None:
        loss = metrics["eval/loss"]
        if loss < self.best * (1.0 - self.threshold):
            self.best = loss
            self.stalled = 0
            return
        self.stalled += 1
        if self.stalled >= self.patience:
            self.scheduler.base_lrs = [lr * self.factor for lr in self.scheduler.base_lrs]  # ruleid: MLS304
            self.stalled = 0
            logger.info("eval loss plateaued at step %d; schedule re-warmed", step)
