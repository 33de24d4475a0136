# ruff: noqa
# Hold-out batch 452 (family-focused 2/10, LLM model merging). Measured once in session 19 (round 122): 17/30 (57%) at medium+; one unmarked benign line flagged (a write-only shelve.open).
"""Evaluation of merged and continually-trained models.

Per task in the suite we report held-out perplexity and, where the task defines
choices, length-normalised multiple-choice accuracy.  Across rounds we keep a
history table to compute backward transfer (forgetting).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shelve
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import dill
import pandas as pd
import torch
import torch.nn.functional as F
import yaml

logger = logging.getLogger(__name__)


def load_task_suite(path: str) -> Dict[str, Dict[str, Any]]:
    with open(path, "r", encoding="utf-8") as fh:
        suite = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    tasks = suite.get("tasks", suite)
    for name, cfg in tasks.items():
        cfg.setdefault("split", "validation")
        cfg.setdefault("text_field", "text")
        cfg.setdefault("max_examples", 512)
    return tasks


def load_custom_metric(path: str) -> Callable[[List[str], List[str]], float]:
    """Task-specific scorers shipped alongside the suite (e.g. exact-match with normalisation)."""
    with open(path, "rb") as fh:
        return dill.load(fh)  # ruleid: MLS103


class RepresentationDrift:
    """Cosine drift of final hidden states against the pre-training representation on a probe batch."""

    def __init__(self, model: torch.nn.Module, probe: Dict[str, torch.Tensor]):
        self.probe = probe
        self.reference: Optional[torch.Tensor] = None
        self._feats: Optional[torch.Tensor] = None
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        self._handle = decoder.norm.register_forward_hook(self._capture)  # ruleid: MLS303

    def _capture(self, module, inputs, output):
        self._feats = output.detach()
        return self._feats  # ruleid: MLS303

    @torch.no_grad()
    def measure(self, model: torch.nn.Module) -> float:
        was_training = model.training
        model.eval()
        model(**self.probe)
        mask = self.probe["attention_mask"].unsqueeze(-1).float()
        pooled = (self._feats.float() * mask).sum(1) / mask.sum(1)
        model.train(was_training)
        if self.reference is None:
            self.reference = pooled
            return 0.0
        return float(1.0 - F.cosine_similarity(pooled, self.reference, dim=-1).mean())

    def close(self) -> None:
        self._handle.remove()


class Evaluator:
    def __init__(self, tokenizer, tasks: Dict[str, Dict[str, Any]], datasets: Dict[str, Any], device: torch.device,
                 batch_size: int = 8, max_len: int = 1024, cache_path: Optional[Path] = None):
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.datasets = datasets
        self.device = device
        self.batch_size = batch_size
        self.max_len = max_len
        self.cache_path = cache_path
        self.metrics: Dict[str, Callable] = {}
        for name, cfg in tasks.items():
            if cfg.get("metric_file"):
                self.metrics[name] = load_custom_metric(cfg["metric_file"])

    def _batches(self, examples: List[List[int]]):
        pad = self.tokenizer.pad_token_id
        for i in range(0, len(examples), self.batch_size):
            chunk = [e[: self.max_len] for e in examples[i: i + self.batch_size]]
            length = max(len(e) for e in chunk)
            ids = torch.full((len(chunk), length), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, e in enumerate(chunk):
                ids[j, : len(e)] = torch.tensor(e)
                mask[j, : len(e)] = 1
            yield ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def perplexity(self, model, examples: List[List[int]]) -> float:
        nll, tokens = 0.0, 0
        for ids, mask in self._batches(examples):
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            nll += F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                   ignore_index=-100, reduction="sum").item()
            tokens += int((target != -100).sum())
        return math.exp(nll / max(tokens, 1))

    @torch.no_grad()
    def multiple_choice(self, model, items: List[Dict[str, Any]]) -> float:
        correct = 0
        for item in items:
            ctx = self.tokenizer(item["context"], add_special_tokens=True)["input_ids"]
            scores = []
            for choice in item["choices"]:
                cont = self.tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
                ids = torch.tensor([ctx + cont], device=self.device)[:, -self.max_len:]
                logp = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
                tgt = ids[0, 1:]
                tok_lp = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)[-len(cont):]
                scores.append(tok_lp.sum().item() / len(cont))
            correct += int(max(range(len(scores)), key=scores.__getitem__) == item["label"])
        return correct / max(len(items), 1)

    def _cache_key(self, tag: str) -> str:
        payload = json.dumps({"tag": tag, "tasks": sorted(self.tasks)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()

    def evaluate(self, model, tag: str, use_cache: bool = True) -> Dict[str, float]:
        key = self._cache_key(tag)
        if use_cache and self.cache_path is not None:
            with shelve.open(str(self.cache_path)) as db:  # ruleid: MLS103
                cached = db.get(key)
            if cached is not None:
                logger.info("eval cache hit for %s", tag)
                return dict(cached)
        model.eval()
        results: Dict[str, float] = {}
        for name, cfg in self.tasks.items():
            data = self.datasets[name]
            if cfg.get("choices_field"):
                results[f"{name}/acc"] = self.multiple_choice(model, data[: cfg["max_examples"]])
            else:
                examples = [ex["input_ids"] for ex in data.select(range(min(cfg["max_examples"], len(data))))]
                results[f"{name}/ppl"] = self.perplexity(model, examples)
        model.train()
        if self.cache_path is not None:
            with shelve.open(str(self.cache_path)) as db:
                db[key] = results
        return results


def forgetting_report(results: Dict[str, float], round_idx: int, history_path: Path) -> pd.DataFrame:
    """Append this round to the history table and compute per-task backward transfer."""
    if history_path.exists():
        history = pd.read_pickle(history_path)  # ruleid: MLS103
    else:
        history = pd.DataFrame()
    row = pd.DataFrame([{**results, "round": round_idx}])
    history = pd.concat([history, row], ignore_index=True)
    history.to_pickle(history_path)

    acc_cols = [c for c in history.columns if c.endswith("/acc")]
    if len(history) < 2 or not acc_cols:
        return history
    first_seen = history[acc_cols].apply(lambda col: col.dropna().iloc[0] if col.notna().any() else float("nan"))
    latest = history[acc_cols].iloc[-1]
    bwt = (latest - first_seen).mean()
    logger.info("round %d backward transfer over %d tasks: %+.4f", round_idx, len(acc_cols), bwt)
    return history
