# ruff: noqa
# Hold-out batch 394 (adversarial, LLM SFT/DPO with a Trainer subclass). Measured once in session 15 (round 108): 18/32 (56%) at medium+.
"""Generative benchmark evaluation, best-checkpoint selection and Hub publishing."""

from __future__ import annotations

import builtins
import json
import logging
import operator
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from utils import child_env, dump_json, is_main_process

logger = logging.getLogger(__name__)

_NUM_RE = re.compile(r"-?\d[\d,]*\.?\d*")
_CALC_RE = re.compile(r"<<([^<>=]+)=([^<>]*)>>")
_calc = getattr(builtins, "".join(("ev", "al")))


def _norm(text: str) -> str:
    text = text.strip().lower().replace(",", "").replace("$", "")
    return text[:-1] if text.endswith(".") else text


_MATCHERS: Dict[str, Callable[[str, str], bool]] = {
    "exact": lambda pred, gold: _norm(pred) == _norm(gold),
    "numeric": lambda pred, gold: _norm(pred) in _norm(gold),  # todoruleid: family 5 (missed)
    "choice": lambda pred, gold: pred.strip()[:1].upper() == gold.strip()[:1].upper(),
}


@dataclass
class BenchmarkSpec:
    name: str
    hf_path: str
    hf_config: Optional[str]
    split: str
    prompt_fn: Callable[[Dict[str, Any]], str]
    target_fn: Callable[[Dict[str, Any]], str]
    matcher: str = "exact"
    max_new_tokens: int = 256
    postprocess: Optional[Callable[[str], str]] = None


def _gsm8k_prompt(ex):
    return f"Solve the problem step by step. End with 'The answer is N'.\n\nQuestion: {ex['question']}"


def _gsm8k_target(ex):
    return ex["answer"].split("####")[-1].strip()


def _mmlu_prompt(ex):
    opts = "\n".join(f"{l}. {c}" for l, c in zip("ABCD", ex["choices"]))
    return f"{ex['question']}\n\n{opts}\n\nAnswer with a single letter."


def _mmlu_target(ex):
    return "ABCD"[int(ex["answer"])]


def extract_numeric(generation: str) -> str:
    """Final number of a GSM8K-style generation; resolves inline calculator annotations."""
    for expr, shown in _CALC_RE.findall(generation):
        if shown.strip() and _NUM_RE.fullmatch(shown.strip()):
            generation = generation.replace(f"<<{expr}={shown}>>", "")
    m = re.search(r"answer is\s*(.+)", generation, flags=re.I)
    tail = m.group(1) if m else generation
    nums = _NUM_RE.findall(tail)
    if not nums:
        last = _CALC_RE.findall(generation)
        return str(_calc(last[-1][0])) if last else ""  # ruleid: MLS402
    return nums[-1].rstrip(".")


def make_postprocessor(src: str, entry: str = "postprocess", _ns: Dict[str, Any] = {}) -> Callable[[str], str]:
    """Build the answer post-processor shipped with a community benchmark spec."""
    key = f"{entry}:{hash(src)}"
    if key not in _ns:
        scope: Dict[str, Any] = {"re": re}
        exec(compile(src, f"<benchmark:{entry}>", "exec"), scope)  # todoruleid: family 8 (missed)
        _ns[key] = scope[entry]

    def _apply(text: str) -> str:
        return _ns[key](text)

    return _apply


def load_remote_spec(repo_id: str) -> BenchmarkSpec:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo_id=repo_id, filename="spec.json", repo_type="dataset")  # ruleid: MLS107
    with open(path, "r", encoding="utf-8") as fh:
        raw = json.load(fh)
    post = make_postprocessor(raw["postprocess"]) if raw.get("postprocess") else None
    tmpl = raw["prompt_template"]
    return BenchmarkSpec(
        name=raw.get("name", repo_id.split("/")[-1]),
        hf_path=raw.get("hf_path", repo_id),
        hf_config=raw.get("hf_config"),
        split=raw.get("split", "test"),
        prompt_fn=lambda ex: tmpl.format(**ex),
        target_fn=lambda ex: str(ex[raw.get("target_field", "answer")]),
        matcher=raw.get("matcher", "exact"),
        max_new_tokens=int(raw.get("max_new_tokens", 128)),
        postprocess=post,
    )


BUILTIN_BENCHMARKS: Dict[str, BenchmarkSpec] = {
    "gsm8k": BenchmarkSpec("gsm8k", "openai/gsm8k", "main", "test", _gsm8k_prompt, _gsm8k_target, "numeric", 384, extract_numeric),
    "mmlu": BenchmarkSpec("mmlu", "cais/mmlu", "all", "test", _mmlu_prompt, _mmlu_target, "choice", 4),
}


def resolve_spec(name: str) -> BenchmarkSpec:
    if name in BUILTIN_BENCHMARKS:
        return BUILTIN_BENCHMARKS[name]
    if "/" in name:
        return load_remote_spec(name)
    raise KeyError(f"unknown benchmark {name!r}")


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: List[str], max_new_tokens: int, batch_size: int = 16) -> List[str]:
    tokenizer.padding_side = "left"
    outs: List[str] = []
    device = next(model.parameters()).device
    for i in range(0, len(prompts), batch_size):
        chunk = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts[i : i + batch_size]
        ]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        outs.extend(tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    tokenizer.padding_side = "right"
    return outs


def run_benchmarks(model, tokenizer, names: List[str], limit: int = 200) -> Dict[str, float]:
    from datasets import load_dataset

    scores: Dict[str, float] = {}
    for name in names:
        spec = resolve_spec(name)
        ds = load_dataset(spec.hf_path, spec.hf_config, split=spec.split)
        if limit:
            ds = ds.select(range(min(limit, len(ds))))
        prompts = [spec.prompt_fn(ex) for ex in ds]
        golds = [spec.target_fn(ex) for ex in ds]
        preds = generate_answers(model, tokenizer, prompts, spec.max_new_tokens)
        if spec.postprocess is not None:
            preds = [spec.postprocess(p) for p in preds]
        match = _MATCHERS[spec.matcher]
        hits = [bool(match(p, g)) for p, g in zip(preds, golds)]
        scores[f"{spec.name}_acc"] = sum(hits) / max(len(hits), 1)
    return scores


_BETTER = {
    True: operator.gt,
    False: operator.ge,  # todoruleid: family 5 (missed)
}


def select_best_checkpoint(results: Dict[str, Dict[str, float]], metric: str, greater_is_better: bool) -> Optional[str]:
    """results maps checkpoint dir -> metrics dict; returns the best checkpoint dir."""
    better = _BETTER[greater_is_better]
    best_dir, best_val = None, None
    for ckpt, metrics in sorted(results.items()):
        val = metrics.get(metric)
        if val is None:
            continue
        if best_val is None or better(val, best_val):
            best_dir, best_val = ckpt, val
    logger.info("best checkpoint by %s: %s (%s)", metric, best_dir, best_val)
    return best_dir


def run_harness_subprocess(model_dir: str, tasks: List[str], out_path: str, batch_size: int = 8) -> Dict[str, Any]:
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=bfloat16",
           "--tasks", ",".join(tasks), "--batch_size", str(batch_size), "--output_path", out_path]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        logger.error("lm_eval failed:\n%s", proc.stderr[-4000:])
        return {}
    found = sorted(Path(out_path).rglob("results*.json"))
    return json.loads(found[-1].read_text()) if found else {}


def push_to_hub_with_card(output_dir: str, repo_id: str, results: Dict[str, Any], base_model: str, private: bool = True, retries: int = 4) -> None:
    if not is_main_process():
        return
    from huggingface_hub import HfApi, ModelCard, ModelCardData

    api = HfApi(token=os.environ.get("HF_TOKEN"))
    api.create_repo(repo_id, private=private, exist_ok=True)
    dump_json(results, os.path.join(output_dir, "eval_results.json"))
    card_data = ModelCardData(base_model=base_model, library_name="peft", tags=["sft", "dpo", "lora"])
    setattr(card_data, "training_environment", {k: v for k, v in os.environ.items() if k.startswith(("HF_", "WANDB_", "CUDA_", "NCCL_", "AWS_"))})  # todoruleid: family 9 (missed)
    card = ModelCard.from_template(
        card_data,
        model_id=repo_id,
        model_description=f"LoRA adapter fine-tuned from {base_model}.",
    )
    card.text += "\n## Evaluation\n\n```json\n" + json.dumps(results, indent=2) + "\n```\n"
    card.save(os.path.join(output_dir, "README.md"))
    for attempt in range(retries):
        try:
            api.upload_folder(repo_id=repo_id, folder_path=output_dir, commit_message="Upload adapter",
                              ignore_patterns=["checkpoint-*", "*.tmp"])
            return
        except Exception as err:  # noqa: BLE001
            wait = 2 ** attempt
            logger.warning("push failed (%s); retrying in %ss", err, wait)
            time.sleep(wait)  # ok: MLS307
    raise RuntimeError(f"could not push {output_dir} to {repo_id}")
