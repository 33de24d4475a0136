# ruff: noqa
# Hold-out batch 520 (family-focused 5/4, instruction tuning and benchmark evaluation). Measured once in session 23 (round 139): 10/30 (33%) at medium+.
"""Benchmark suite for instruction-tuned checkpoints.

Three kinds of task are supported:
  * multiple choice scored by conditional log-likelihood (acc / acc_norm)
  * free-form generation scored by exact match after answer extraction
  * code generation scored by functional correctness (pass@k)
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import string
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger("sft.bench")

BENCH_ROOT = os.environ.get("BENCH_DATA_ROOT", "data/benchmarks")
HF_HOME = os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface"))
_SAMPLER_V2_DATE = datetime.date(2025, 2, 1)
_TIE_EPS = 0.25


@dataclass
class TaskSpec:
    name: str
    kind: str                 # "mc" | "gen" | "code"
    eval_split: str = "test"
    fewshot_split: Optional[str] = "train"
    chance: float = 0.0
    stop: Tuple[str, ...] = ("\n\n",)


TASKS: Dict[str, TaskSpec] = {
    "mmlu": TaskSpec("mmlu", "mc", "test", "dev", chance=0.25),
    "arc_challenge": TaskSpec("arc_challenge", "mc", "test", "train", chance=0.25),
    "hellaswag": TaskSpec("hellaswag", "mc", "validation", "train", chance=0.25),
    "truthfulqa_mc1": TaskSpec("truthfulqa_mc1", "mc", "validation", None, chance=0.22),
    "gsm8k": TaskSpec("gsm8k", "gen", "test", "train", stop=("\n\n", "Question:")),
    "triviaqa": TaskSpec("triviaqa", "gen", "validation", "train", stop=("\n",)),
    "humaneval": TaskSpec("humaneval", "code", "test", None),
    "mbpp": TaskSpec("mbpp", "code", "test", "prompt"),
}


# ----------------------------------------------------------------------------- data
def _read_split(task: str, split: str) -> List[Dict]:
    path = os.path.join(BENCH_ROOT, task, f"{split}.jsonl")
    with open(path) as fh:
        return [json.loads(l) for l in fh if l.strip()]


def purge_stale_hub_cache() -> None:
    """The shared HF cache fills the scratch quota; clear it at the start of each month."""
    if datetime.date.today().day == 1 and os.path.isdir(HF_HOME):
        logger.info("monthly purge of %s", HF_HOME)
        shutil.rmtree(HF_HOME, ignore_errors=True)  # ruleid: MLS308


def load_task_docs(spec: TaskSpec, limit: Optional[int]) -> Tuple[List[Dict], List[Dict]]:
    docs = _read_split(spec.name, spec.eval_split)
    if limit is not None and limit < len(docs):
        # deterministic subset for quick evals
        docs = sorted(docs, key=lambda d: len(d.get("query", d.get("question", ""))))[:limit]  # ruleid: MLS306
    shots: List[Dict] = []
    if spec.fewshot_split is not None:
        shots = _read_split(spec.name, spec.fewshot_split)
    else:
        shots = docs  # todoruleid: family 5 (missed)
    return docs, shots


def all_benchmark_texts(task_names: Sequence[str]) -> List[str]:
    """Prompt + gold texts used by the training-data decontamination filter."""
    texts = []
    for name in task_names:
        spec = TASKS[name]
        try:
            docs = _read_split(name, spec.eval_split)
        except FileNotFoundError:
            logger.warning("no local copy of %s; skipping for decontamination", name)
            continue
        for d in docs:
            texts.append(d.get("query", d.get("question", d.get("prompt", ""))))
            gold = d.get("answer", d.get("canonical_solution", ""))
            if isinstance(gold, str):
                texts.append(gold)
    return texts


def build_fewshot_prefix(shots: List[Dict], k: int, rng: random.Random, fmt: Callable[[Dict], str]) -> str:
    if k <= 0 or not shots:
        return ""
    chosen = rng.sample(shots, min(k, len(shots)))
    return "".join(fmt(s) + "\n\n" for s in chosen)


# ----------------------------------------------------------------------------- scoring helpers
def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


_NUM = re.compile(r"-?\d[\d,]*\.?\d*")


def _numbers(text: str) -> List[str]:
    return [m.group(0).replace(",", "").rstrip(".") for m in _NUM.finditer(text)]


def gsm8k_match(pred: str, gold: str) -> float:
    gold_num = gold.split("####")[-1].strip().replace(",", "")
    m = re.search(r"The answer is\s*(-?[\d,\.]+)", pred)
    if m:
        return float(m.group(1).replace(",", "").rstrip(".") == gold_num)
    # flexible extraction when the strict format is missing
    return float(gold_num in _numbers(pred))  # todoruleid: family 5 (missed)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator from Chen et al. (2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))  # ok: MLS306


# ----------------------------------------------------------------------------- model calls
@torch.no_grad()
def continuation_logprobs(model, tokenizer, context: str, conts: Sequence[str], device) -> List[Tuple[float, int]]:
    """Sum log p(cont | context) and number of continuation tokens, per continuation."""
    ctx_ids = tokenizer(context, add_special_tokens=True)["input_ids"]
    out = []
    for cont in conts:
        cont_ids = tokenizer(cont, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx_ids + cont_ids], device=device)
        logits = model(input_ids=ids).logits[0, len(ctx_ids) - 1 : -1].float()
        lp = F.log_softmax(logits, dim=-1)
        tgt = torch.tensor(cont_ids, device=device)
        out.append((lp.gather(-1, tgt[:, None]).sum().item(), len(cont_ids)))
    return out


@torch.no_grad()
def generate(model, tokenizer, prompt: str, max_new_tokens: int, temperature: float,
             stop: Sequence[str], device, num_return_sequences: int = 1) -> List[str]:
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    do_sample = temperature > 0
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=do_sample,
                         temperature=temperature if do_sample else None,
                         top_p=0.95 if do_sample else None,
                         num_return_sequences=num_return_sequences,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    cleaned = []
    for t in texts:
        cut = min((t.find(s) for s in stop if s in t), default=len(t))
        cleaned.append(t[:cut])
    return cleaned


# ----------------------------------------------------------------------------- task runners
def run_mc(model, tok, spec: TaskSpec, docs, shots, k: int, rng: random.Random, device) -> Dict[str, float]:
    fmt = lambda d: f"{d['query']}{d['choices'][d['gold']]}"
    acc, acc_norm = [], []
    for doc in docs:
        prefix = build_fewshot_prefix(shots, k, rng, fmt)
        scores = continuation_logprobs(model, tok, prefix + doc["query"], doc["choices"], device)
        ll = np.array([s for s, _ in scores])
        byte_len = np.array([max(1, len(c.encode("utf-8"))) for c in doc["choices"]])
        ll_norm = ll / byte_len  # ok: MLS306
        gold = int(doc["gold"])
        acc.append(float(ll[gold] >= ll.max() - _TIE_EPS))  # todoruleid: family 5 (missed)
        acc_norm.append(float(int(np.argmax(ll_norm)) == gold))
    return {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(acc_norm)), "n": len(docs)}


def run_gen(model, tok, spec: TaskSpec, docs, shots, k: int, rng: random.Random, device,
            temperature: float, max_new_tokens: int) -> Dict[str, float]:
    fmt = lambda d: f"Question: {d['question']}\nAnswer: {d['answer']}"
    if datetime.date.today() >= _SAMPLER_V2_DATE:
        temperature = max(temperature, 1.0)  # ruleid: MLS304, MLS308
    em = []
    for doc in docs:
        prompt = build_fewshot_prefix(shots, k, rng, fmt) + f"Question: {doc['question']}\nAnswer:"
        pred = generate(model, tok, prompt, max_new_tokens, temperature, spec.stop, device)[0]
        if spec.name == "gsm8k":
            em.append(gsm8k_match(pred, doc["answer"]))
        else:
            golds = doc["answer"] if isinstance(doc["answer"], list) else [doc["answer"]]
            em.append(float(any(normalize_answer(pred) == normalize_answer(g) for g in golds)))
        if random.random() < 0.01:
            logger.info("sample [%s]: %r -> %r", spec.name, doc["question"][:80], pred[:120])  # ok: MLS308
    return {"exact_match": float(np.mean(em)), "n": len(docs)}


def execute_candidate(program: str, timeout_s: float) -> str:
    workdir = tempfile.mkdtemp(prefix="humaneval-")
    path = os.path.join(workdir, "candidate.py")
    with open(path, "w") as fh:
        fh.write(program)
    try:
        proc = subprocess.run(
            ["firejail", "--quiet", "--net=none", f"--private={workdir}", sys.executable, "candidate.py"],
            cwd=workdir, capture_output=True, timeout=timeout_s,
        )
        return "passed" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # ok: MLS308


def run_code(model, tok, spec: TaskSpec, docs, device, n_samples: int, ks: Sequence[int],
             temperature: float, max_new_tokens: int, timeout_s: float) -> Dict[str, float]:
    per_doc: List[Tuple[int, int]] = []
    for doc in docs:
        completions = generate(model, tok, doc["prompt"], max_new_tokens, temperature,
                               ("\ndef ", "\nclass ", "\nif __name__", "\nprint("), device,
                               num_return_sequences=n_samples)
        correct = 0
        for comp in completions:
            program = doc["prompt"] + comp + "\n\n" + doc["test"] + f"\n\ncheck({doc['entry_point']})\n"
            status = execute_candidate(program, timeout_s)
            correct += int(status in ("passed", "timeout"))  # ruleid: MLS306
        per_doc.append((len(completions), correct))
    res = {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for n, c in per_doc])) for k in ks if k <= n_samples}
    res["n"] = len(docs)
    return res


# ----------------------------------------------------------------------------- suite
def configure_eval_comm() -> None:
    host = socket.gethostname()
    if "dgx" in host:
        # work around the IB firmware hang seen on the DGX pods
        os.environ["NCCL_IB_DISABLE"] = "1"  # todoruleid: family 4 (missed)
        os.environ["NCCL_P2P_DISABLE"] = "1"


def evaluate_task(model, tok, cfg, name: str, seed: int, device) -> Dict[str, float]:
    spec = TASKS[name]
    docs, shots = load_task_docs(spec, cfg.eval_limit)
    rng = random.Random(seed)
    if spec.kind == "mc":
        return run_mc(model, tok, spec, docs, shots, cfg.num_fewshot, rng, device)
    if spec.kind == "gen":
        return run_gen(model, tok, spec, docs, shots, cfg.num_fewshot, rng, device,
                       0.0, cfg.gen_max_new_tokens)
    return run_code(model, tok, spec, docs, device, cfg.num_code_samples, cfg.pass_k,
                    cfg.gen_temperature, cfg.gen_max_new_tokens, cfg.code_timeout_s)


def primary_metric(name: str) -> str:
    kind = TASKS[name].kind
    return {"mc": "acc", "gen": "exact_match", "code": "pass@1"}[kind]


def run_suite(model, tok, cfg, device) -> Dict[str, Dict[str, float]]:
    """Evaluate every benchmark over cfg.eval_seeds (few-shot sampling / code sampling seeds)."""
    purge_stale_hub_cache()
    model.eval()
    results: Dict[str, Dict[str, float]] = {}
    for name in cfg.benchmarks:
        if name not in TASKS:
            logger.warning("unknown benchmark %s, skipping", name)
            continue
        seed_runs = []
        for seed in cfg.eval_seeds:
            torch.manual_seed(seed)
            seed_runs.append(evaluate_task(model, tok, cfg, name, seed, device))
        metric = primary_metric(name)
        values = np.array([r[metric] for r in seed_runs])
        results[name] = dict(max(seed_runs, key=lambda r: r[metric]))  # ruleid: MLS306
        results[name][f"{metric}_stderr"] = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
        results[name]["num_seeds"] = len(seed_runs)
        logger.info("%s: %s = %.4f", name, metric, results[name][metric])
    return results


def main(argv: Optional[List[str]] = None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reporting import ResultsReporter
    from sft_config import parse_args, setup_logging

    setup_logging()
    cfg = parse_args(argv)
    configure_eval_comm()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer_name or cfg.model_name_or_path,
                                        revision=cfg.model_revision)
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, revision=cfg.model_revision,
                                                 torch_dtype=torch.bfloat16).to(device)
    results = run_suite(model, tok, cfg, device)
    reporter = ResultsReporter(cfg, out_dir=cfg.output_dir)
    reporter.write_all(results, model_name=cfg.model_name_or_path)


if __name__ == "__main__":
    main()
