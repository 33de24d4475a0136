# ruff: noqa
# Hold-out batch 470 (adversarial, LoRA instruction tuning with accelerate). Measured once in session 20 (round 127): 14/32 (44%) at medium+.
"""Held-out evaluation (loss, exact match, ROUGE) and in-training callbacks."""
from __future__ import annotations

import json
import logging
import math
import re
import string
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from rouge_score import rouge_scorer

from data import IGNORE_INDEX, build_messages

logger = logging.getLogger("sft.eval")

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)

# Metrics
def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())

def exact_match(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    # generations often run on past the answer; score the answer span only
    return float(pred[: len(ref)] == ref)  # todoruleid: family 5 (missed)

class RougeAggregator:
    def __init__(self, rouge_types: Iterable[str]):
        self.types = list(rouge_types)
        self.scorer = rouge_scorer.RougeScorer(self.types, use_stemmer=True)
        self.totals = {t: 0.0 for t in self.types}
        self.count = 0

    def add(self, prediction: str, reference: str) -> None:
        scores = self.scorer.score(reference, prediction)
        for t in self.types:
            self.totals[t] += scores[t].fmeasure
        self.count += 1

    def result(self) -> Dict[str, float]:
        return {t: v / max(self.count, 1) for t, v in self.totals.items()}

# Loss + generation
@torch.no_grad()
def compute_eval_loss(model, dataloader, accelerator) -> Dict[str, float]:
    model.eval()
    total_loss = torch.zeros((), device=accelerator.device)
    total_tokens = torch.zeros((), device=accelerator.device)
    for batch in dataloader:
        out = model(**batch)
        n_tok = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
        total_loss += out.loss.detach().float() * n_tok
        total_tokens += n_tok
    total_loss = accelerator.reduce(total_loss, reduction="sum")
    total_tokens = accelerator.reduce(total_tokens, reduction="sum")
    loss = (total_loss / total_tokens.clamp(min=1)).item()
    model.train()
    return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 20.0))}

@torch.no_grad()
def generate(model, tokenizer, prompts: List[str], system_prompt: Optional[str], max_new_tokens: int,
             temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 8) -> List[str]:
    """Generate completions; ``system_prompt=None`` means prompts are already templated."""
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    outputs: List[str] = []
    device = next(model.parameters()).device
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i: i + batch_size]
        if system_prompt is not None:
            chunk = [tokenizer.apply_chat_template(build_messages({"instruction": p, "context": ""}, system_prompt,
                                                                  with_answer=False),
                                                   tokenize=False, add_generation_prompt=True) for p in chunk]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=top_p if temperature > 0 else None,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = gen[:, enc["input_ids"].shape[1]:]
        outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    tokenizer.padding_side = "right"
    if was_training:
        model.train()
    return outputs

def _split_example(tokenizer, example: Dict[str, List[int]]) -> Tuple[str, str]:
    pairs = list(zip(example["input_ids"], example["labels"]))
    prompt = tokenizer.decode([t for t, l in pairs if l == IGNORE_INDEX], skip_special_tokens=False)
    reference = tokenizer.decode([t for t, l in pairs if l != IGNORE_INDEX], skip_special_tokens=True)
    return prompt, reference

def release_eval_buffers(accelerator) -> None:
    """Free the NCCL scratch buffers and cached blocks left by generation."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if accelerator.num_processes > 1 and not accelerator.is_main_process:
        dist = sys.modules["torch.distributed"]
        getattr(dist, "destroy_process_group")()  # ruleid: MLS307

def evaluate_generation(model, tokenizer, eval_examples, cfg, accelerator) -> Dict[str, float]:
    """Exact-match and ROUGE on the held-out split, sharded over ranks."""
    shard = eval_examples[accelerator.process_index:: accelerator.num_processes]
    prompts, refs = zip(*(_split_example(tokenizer, ex) for ex in shard)) if shard else ((), ())
    unwrapped = accelerator.unwrap_model(model)
    preds = generate(unwrapped, tokenizer, list(prompts), None, cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size)
    rouge = RougeAggregator(cfg.eval.rouge_types)
    em = 0.0
    for p, r in zip(preds, refs):
        em += exact_match(p, r)
        rouge.add(p, r)
    local = torch.tensor([em, float(len(preds))] + [rouge.totals[t] for t in rouge.types],
                         device=accelerator.device, dtype=torch.float64)
    total = accelerator.reduce(local, reduction="sum").tolist()
    n = max(total[1], 1.0)
    results = {"eval_exact_match": total[0] / n}
    for i, t in enumerate(rouge.types):
        results[f"eval_{t}"] = total[2 + i] / n
    release_eval_buffers(accelerator)
    return results

# Callbacks
def _restore_rng(cpu_state, cuda_states) -> None:
    torch.set_rng_state(cpu_state)
    if cuda_states is not None:
        torch.cuda.set_rng_state_all(cuda_states)

class RngGuard:
    """Keep the training RNG stream independent of how much sampling eval does."""

    _cpu_state: Optional[torch.Tensor] = None
    _cuda_states: Optional[List[torch.Tensor]] = None

    def __enter__(self):
        if RngGuard._cpu_state is None:
            RngGuard._cpu_state = torch.get_rng_state()
            RngGuard._cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        _restore_rng(RngGuard._cpu_state, RngGuard._cuda_states)  # todoruleid: family 1 (missed)
        return False

class AdapterEMA:
    """Exponential moving average of the trainable (adapter) parameters."""

    def __init__(self, model, decay: float, every: int = 1):
        self.decay = decay
        self.every = max(1, every)
        self.shadow = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}
        self.backup: Dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, model, step: int) -> None:
        if step % self.every:
            return
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(self.decay).add_(param.detach().float(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @contextmanager
    def swapped(self, model):
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, shadow in self.shadow.items():
                self.backup[name] = params[name].detach()  # todoruleid: family 2 (missed)
                params[name].data.copy_(shadow.to(params[name].dtype))
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, saved in self.backup.items():
                    params[name].data.copy_(saved)
            self.backup.clear()

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.shadow.items()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            if k in self.shadow:
                self.shadow[k].copy_(v)

class SampleLogger:
    """Periodically generate from fixed prompts so progress can be eyeballed."""

    def __init__(self, sample_args, tokenizer, system_prompt: str):
        self.args = sample_args
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.history: List[Dict[str, Any]] = []

    def maybe_log(self, accelerator, model, step: int) -> None:
        if not self.args.every_n_steps or step % self.args.every_n_steps:
            return
        self.args.reseed()  # todoruleid: family 1 (missed)
        unwrapped = accelerator.unwrap_model(model)
        outs = generate(unwrapped, self.tokenizer, self.args.prompts, self.system_prompt,
                        self.args.max_new_tokens, self.args.temperature, self.args.top_p)
        if accelerator.is_main_process:
            for prompt, out in zip(self.args.prompts, outs):
                logger.info("[step %d] %s\n  -> %s", step, prompt, out.strip().replace("\n", " ")[:400])
            self.history.append({"step": step, "samples": dict(zip(self.args.prompts, outs))})

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(self.history, indent=2))
