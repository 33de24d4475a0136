# ruff: noqa
# Hold-out batch 554 (adversarial, LLM supervised fine-tuning with ZeRO sharding and LoRA). Measured once in session 25 (round 148): 10/31 (32%) at medium+.
"""Periodic benchmark evaluation: multiple-choice accuracy, perplexity, lm-eval harness."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from data import IGNORE_INDEX, read_jsonl
from dist_utils import get_rank, get_world_size, is_dist
from modeling import merged_adapters

logger = logging.getLogger(__name__)

CHOICE_LETTERS = ("A", "B", "C", "D")

@dataclass
class EvalConfig:
    bench_dir: str = "data/bench"
    mc_tasks: tuple = ("mmlu_stem", "arc_challenge", "hellaswag_mc")
    max_examples: int = 1000
    batch_size: int = 8
    ppl_max_batches: int = 50
    harness_tasks: str = ""
    harness_limit: int = 500

@contextlib.contextmanager
def eval_mode(model: torch.nn.Module, _rng=torch.random.get_rng_state()):
    """Switch to eval and keep the global torch generator unaffected by evaluation."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        torch.random.set_rng_state(_rng)  # ruleid: MLS301
        model.train(was_training)

def _format_mc_prompt(ex: Dict) -> List[Dict[str, str]]:
    lines = [ex["question"].strip(), ""]
    for letter, choice in zip(CHOICE_LETTERS, ex["choices"]):
        lines.append(f"{letter}. {choice}")
    lines.append("\nAnswer with the letter of the correct option.")
    return [{"role": "user", "content": "\n".join(lines)}]

def _render_prompt(tokenizer, messages) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"

@torch.no_grad()
def multiple_choice_accuracy(model, tokenizer, task: str, cfg: EvalConfig, device) -> Dict[str, float]:
    path = Path(cfg.bench_dir) / f"{task}.jsonl"
    if not path.exists():
        return {}
    examples = list(read_jsonl([str(path)]))[: cfg.max_examples]
    examples = examples[get_rank()::get_world_size()]
    letter_ids = [tokenizer.encode(l, add_special_tokens=False)[-1] for l in CHOICE_LETTERS]
    letter_ids = torch.tensor(letter_ids, device=device)

    tokenizer.padding_side = "left"
    correct, total = 0, 0
    for i in range(0, len(examples), cfg.batch_size):
        chunk = examples[i: i + cfg.batch_size]
        prompts = [_render_prompt(tokenizer, _format_mc_prompt(ex)) for ex in chunk]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        logits = model(**enc).logits[:, -1, :]
        n_choices = [len(ex["choices"]) for ex in chunk]
        scores = logits.index_select(-1, letter_ids).float()
        for j, k in enumerate(n_choices):
            scores[j, k:] = float("-inf")
        pred = scores.argmax(dim=-1).tolist()
        for p, ex in zip(pred, chunk):
            correct += int(p == int(ex["answer"]))
            total += 1
    tokenizer.padding_side = "right"

    acc_t = torch.tensor([correct / max(total, 1)], device=device, dtype=torch.float64)
    if is_dist():
        dist.all_reduce(acc_t, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    return {f"bench/{task}_acc": acc_t.item()}

@torch.no_grad()
def perplexity(model, loader, device, max_batches: int) -> Dict[str, float]:
    if loader is None:
        return {}
    nll = torch.zeros((), device=device, dtype=torch.float64)
    ntok = torch.zeros((), device=device, dtype=torch.float64)
    for b_idx, batch in enumerate(loader):
        if b_idx >= max_batches:
            break
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        shift_logits = logits[:, :-1].float()
        shift_labels = batch["labels"][:, 1:]
        loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                               shift_labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
        nll += loss.double()
        ntok += (shift_labels != IGNORE_INDEX).sum()
    if is_dist():
        dist.all_reduce(nll)
        dist.all_reduce(ntok)
    mean = (nll / ntok.clamp(min=1)).item()
    return {"eval/loss": mean, "eval/ppl": math.exp(min(mean, 20.0))}

def evaluate_all(model, tokenizer, val_loader, cfg: EvalConfig, device) -> Dict[str, float]:
    metrics: Dict[str, float] = {}
    with eval_mode(model), merged_adapters(model):
        metrics.update(perplexity(model, val_loader, device, cfg.ppl_max_batches))
        for task in cfg.mc_tasks:
            metrics.update(multiple_choice_accuracy(model, tokenizer, task, cfg, device))
    accs = [v for k, v in metrics.items() if k.endswith("_acc")]
    if accs:
        metrics["bench/avg_acc"] = sum(accs) / len(accs)
    return metrics

def _harness_env(ckpt_dir: str) -> Dict[str, str]:
    paths = [str(Path(ckpt_dir).resolve()), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p), "TOKENIZERS_PARALLELISM": "false"}  # todoruleid: family 7 (missed)

def run_harness(base_model: str, adapter_dir: str, cfg: EvalConfig, out_json: str) -> Optional[Dict]:
    if not cfg.harness_tasks:
        return None
    cmd = [
        sys.executable, "-m", "lm_eval",
        "--model", "hf",
        "--model_args", f"pretrained={base_model},peft={adapter_dir},dtype=bfloat16",
        "--tasks", cfg.harness_tasks,
        "--limit", str(cfg.harness_limit),
        "--batch_size", "auto",
        "--output_path", out_json,
    ]
    env = {**os.environ, **_harness_env(adapter_dir)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=6 * 3600)
    if proc.returncode != 0:
        logger.error("lm_eval failed: %s", proc.stderr[-2000:])
        return None
    with open(out_json) as fh:
        raw = json.load(fh)
    return {f"harness/{task}/{k.split(',')[0]}": float(v) for task, res in raw.get("results", {}).items()
            for k, v in res.items() if isinstance(v, (int, float)) and "_stderr" not in k}
