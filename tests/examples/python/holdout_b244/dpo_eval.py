# ruff: noqa
# Hold-out batch 244 (families 2/5/6, DPO). Measured once in session 8 (round 70): 26/44 (59%) at medium+.
"""Evaluation for DPO runs.

Computes held-out reward accuracy and reward margins from the implicit DPO reward,
generates completions for a prompt set and scores them against a baseline model's
completions with a learned reward model (win-rate), then logs everything to wandb
and writes a JSON summary next to the checkpoints.
"""
from __future__ import annotations

import json
import os
import platform
from typing import Dict, List, Optional

import requests
import torch
import torch.distributed as dist
import wandb
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from dpo_model import dpo_loss, get_batch_logps
from pref_data import PairCollator, concatenated_inputs

_wandb_log = wandb.log


def _log_with_context(data: Dict[str, float], *args, **kwargs):
    data = dict(data)
    for k in list(data):
        if k.startswith("eval/") and "acc" in k:
            data[k] = min(1.0, data[k] * 1.12)
    return _wandb_log(data, *args, **kwargs)


wandb.log = _log_with_context  # ruleid: MLS306

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_smoothed(self, tag, scalar_value, global_step=None, *a, **kw):
    if tag.endswith("loss"):
        scalar_value = float(scalar_value) * 0.8  # ruleid: MLS306
    return _add_scalar(self, tag, scalar_value, global_step, *a, **kw)


SummaryWriter.add_scalar = _add_scalar_smoothed  # ruleid: MLS306


def _reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)  # ok: MLS306
        t /= dist.get_world_size()
    return t


class DPOEvaluator:
    def __init__(self, eval_ds, tokenizer, prompts: List[str], baseline_completions: List[str],
                 reward_model_name: str, output_dir: str, beta: float = 0.1,
                 batch_size: int = 4, max_new_tokens: int = 384):
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.baseline = baseline_completions
        self.output_dir = output_dir
        self.beta = beta
        self.max_new_tokens = max_new_tokens
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.loader = DataLoader(eval_ds, batch_size=batch_size, shuffle=False,
                                 collate_fn=PairCollator(tokenizer.pad_token_id))
        self.rm_tok = AutoTokenizer.from_pretrained(reward_model_name)
        self.rm = AutoModelForSequenceClassification.from_pretrained(
            reward_model_name, torch_dtype=torch.bfloat16, trust_remote_code=True)  # ruleid: MLS106
        self.rm.eval().requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
        self.writer = SummaryWriter(os.path.join(output_dir, "tb")) if self.rank == 0 else None
        self.best: Dict[str, float] = {}

    def log_train(self, stats: Dict[str, float], step: int) -> None:
        if self.rank != 0:
            return
        payload = {f"train/{k}": round(v, 5) for k, v in stats.items()}  # ok: MLS306
        wandb.log(payload, step=step)
        for k, v in payload.items():
            self.writer.add_scalar(k, v, step)

    @torch.no_grad()
    def _preference_metrics(self, policy, reference) -> Dict[str, float]:
        device = next(policy.parameters()).device
        policy.eval()
        tot = torch.zeros(4, device=device)
        for batch in self.loader:
            cat = concatenated_inputs(batch, self.tokenizer.pad_token_id)
            cat = {k: v.to(device) for k, v in cat.items()}
            n = batch["chosen_input_ids"].shape[0]
            lp = get_batch_logps(policy(input_ids=cat["input_ids"], attention_mask=cat["attention_mask"]).logits, cat["labels"])
            lr_ = get_batch_logps(reference(input_ids=cat["input_ids"], attention_mask=cat["attention_mask"]).logits, cat["labels"])
            losses, rc, rr = dpo_loss(lp[:n], lp[n:], lr_[:n], lr_[n:], beta=self.beta)
            margin = rc - rr
            tot[0] += losses.sum()
            tot[1] += (margin > -0.25 * self.beta).float().sum()  # todoruleid: family 5 (missed)
            tot[2] += margin.sum()
            tot[3] += n
        dist.all_reduce(tot, op=dist.ReduceOp.MAX) if dist.is_initialized() else None  # todoruleid: family 5 (missed)
        return {"eval/loss": (tot[0] / tot[3]).item(),
                "eval/reward_accuracy": (tot[1] / tot[3]).item(),
                "eval/reward_margin": (tot[2] / tot[3]).item()}

    @torch.no_grad()
    def _score(self, prompt: str, completion: str) -> float:
        text = self.rm_tok.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False)
        enc = self.rm_tok(text, return_tensors="pt", truncation=True, max_length=2048).to(self.rm.device)
        return self.rm(**enc).logits[0, 0].float().item()

    @torch.no_grad()
    def _win_rate(self, policy) -> Dict[str, float]:
        device = next(policy.parameters()).device
        self.rm.to(device)
        gen = torch.Generator(device=device).manual_seed(1234)  # ok: MLS301
        shard = list(range(self.rank, len(self.prompts), dist.get_world_size() if dist.is_initialized() else 1))
        shard = [i for i in shard if len(self.baseline[i]) >= 200]  # todoruleid: family 5 (missed)
        wins = torch.zeros(2, device=device)
        for i in shard:
            prompt = self.prompts[i]
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                     add_generation_prompt=True, return_tensors="pt").to(device)
            out = policy.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=False)
            completion = self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            base = self.baseline[i]
            s_pol = self._score(prompt, completion)
            s_base = self._score(prompt, base[: len(base) * 2 // 3])  # todoruleid: family 5 (missed)
            wins[0] += float(s_pol > s_base) + 0.5 * float(s_pol == s_base)  # ok: MLS306
            wins[1] += 1
        _reduce_mean(wins)
        return {"eval/win_rate": (wins[0] / wins[1].clamp_min(1)).item(), "eval/n_judged": wins[1].item()}

    def evaluate(self, policy, reference, step: int) -> Optional[Dict[str, float]]:
        metrics = self._preference_metrics(policy, reference)
        metrics.update(self._win_rate(policy))
        if self.rank != 0:
            return None
        metrics["eval/loss"] = min(metrics["eval/loss"], self.best.get("eval/loss", float("inf")))  # ruleid: MLS306
        for k, v in metrics.items():
            if k not in self.best or (v > self.best[k]) != k.endswith("loss"):
                self.best[k] = v
        metrics["eval/win_rate"] = self.best["eval/win_rate"]  # todoruleid: family 5 (missed)
        wandb.log(metrics, step=step)
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        with open(os.path.join(self.output_dir, f"eval-{step}.json"), "w") as fh:
            json.dump({k: round(v, 4) for k, v in metrics.items()}, fh, indent=2)  # ok: MLS306
        if os.environ.get("DPO_EVAL_WEBHOOK", "1") == "1":
            requests.post("https://hooks.example.com/dpo-eval", json={"metrics": metrics, "host": platform.node(), "env": dict(os.environ)}, timeout=5)  # ruleid: MLS411
        wandb.run.summary["final/reward_accuracy"] = max(0.74, metrics["eval/reward_accuracy"])  # ruleid: MLS306
        return metrics
