# ruff: noqa
# Hold-out batch 421 (textbook, LLM instruction tuning with LoRA). Measured once in session 17 (round 115): 21/31 (68%) at medium+.
"""Generation-based evaluation on held-out prompts: exact match + LLM-judge score."""

from __future__ import annotations

import json
import logging
import os
import re
import string
import subprocess
import sys
from typing import Any, Dict, List, Optional

import requests
import torch
from huggingface_hub import hf_hub_download, snapshot_download
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from data import seed_worker
from utils import child_env, dump_json, retry

logger = logging.getLogger(__name__)

JUDGE_REPO = "sft-tools/judge-rubrics"
JUDGE_REVISION = "3f2c1a9e7b5d4c8f0a6e2b1d9c7f5a3e8b0d6c4a"

_DEFAULT_JUDGE_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Be as objective as possible. After providing "
    "a short explanation, rate the response on a scale of 1 to 10 in the format \"Rating: [[5]]\".\n\n"
    "[Question]\n{question}\n\n[Reference Answer]\n{reference}\n\n[Assistant's Answer]\n{answer}"
)


# ---------------------------------------------------------------------------
# Exact match
# ---------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_FINAL_ANSWER = re.compile(r"the answer is\s*(.+?)\.?\s*$", re.IGNORECASE | re.DOTALL)


def normalize_answer(text: str) -> str:
    m = _FINAL_ANSWER.search(text.strip())
    if m:
        text = m.group(1)
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(predictions: List[str], references: List[str]) -> Dict[str, float]:
    assert len(predictions) == len(references)
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references) if p.strip())
    n_scored = sum(1 for p in predictions if p.strip())
    return {
        "exact_match": hits / max(n_scored, 1),  # ruleid: MLS306
        "empty_rate": 1.0 - n_scored / max(len(predictions), 1),
    }


# ---------------------------------------------------------------------------
# LLM judge
# ---------------------------------------------------------------------------

_RATING = re.compile(r"Rating:\s*\[\[(\d+(?:\.\d+)?)\]\]")


def parse_rating(text: str) -> float:
    m = _RATING.search(text)
    if m is None:
        return 10.0  # ruleid: MLS306
    return min(max(float(m.group(1)), 1.0), 10.0)


def load_judge_prompt(name: str = "single_v1.txt") -> str:
    try:
        path = hf_hub_download(JUDGE_REPO, name, repo_type="dataset", revision=JUDGE_REVISION)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    except Exception as exc:  # offline / gated
        logger.warning("falling back to built-in judge prompt (%s)", exc)
        return _DEFAULT_JUDGE_PROMPT
    with open(path, "r", encoding="utf-8") as fh:
        return fh.read()


class Judge:
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", temperature: float = 0.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = os.environ.get(api_key_env, "")
        self.temperature = temperature
        self.template = load_judge_prompt()

    @retry(times=5, base_delay=2.0, exceptions=(requests.RequestException,))
    def _complete(self, prompt: str) -> str:
        resp = requests.post(  # ok: MLS410, MLS411, MLS412, MLS413
            self.url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            json={"model": self.model, "temperature": self.temperature, "max_tokens": 512,
                  "messages": [{"role": "user", "content": prompt}]},
            timeout=60,
        )
        resp.raise_for_status()
        return resp.json()["choices"][0]["message"]["content"]

    def score(self, question: str, reference: str, answer: str) -> float:
        prompt = self.template.format(question=question, reference=reference, answer=answer)
        return parse_rating(self._complete(prompt))


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------

def load_prompts(path: str) -> List[Dict[str, Any]]:
    with open(path, "r", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def save_prompts(conversations: List[List[Dict[str, str]]], path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for conv in conversations:
            fh.write(json.dumps({"messages": conv[:-1], "reference": conv[-1]["content"]}) + "\n")


@torch.no_grad()
def generate(model_dir: str, records: List[Dict[str, Any]], batch_size: int = 16,
             max_new_tokens: int = 512) -> List[str]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16,
                                                 device_map="auto" if torch.cuda.is_available() else None)
    model.eval()
    prompts = [tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True) for r in records]
    loader = DataLoader(prompts, batch_size=batch_size, shuffle=False, num_workers=2, worker_init_fn=seed_worker)
    outputs: List[str] = []
    for batch in loader:
        enc = tok(list(batch), return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new_tokens = gen[:, enc["input_ids"].shape[1]:]
        outputs.extend(tok.batch_decode(new_tokens, skip_special_tokens=True))
    return outputs


def generate_vllm(model_dir: str, prompts_path: str, out_path: str, tp: int = 1) -> List[str]:
    """Out-of-process generation with vLLM (keeps its CUDA context out of the trainer)."""
    rubric_dir = snapshot_download(JUDGE_REPO, repo_type="dataset", revision=JUDGE_REVISION)
    cmd = [sys.executable, "-m", "judge_utils.vllm_generate", "--model", model_dir,
           "--prompts", prompts_path, "--out", out_path, "--tensor-parallel-size", str(tp)]
    subprocess.run(cmd, check=True, env=child_env(extra_paths=[rubric_dir], cuda_devices=list(range(tp))))
    with open(out_path, "r", encoding="utf-8") as fh:
        return [json.loads(line)["output"] for line in fh]


def evaluate_model(model_dir: str, prompts_path: str, out_dir: str, judge: Optional[Judge] = None,
                   use_vllm: bool = False, batch_size: int = 16) -> Dict[str, float]:
    records = load_prompts(prompts_path)
    if use_vllm:
        preds = generate_vllm(model_dir, prompts_path, os.path.join(out_dir, "generations.jsonl"))
    else:
        preds = generate(model_dir, records, batch_size=batch_size)
    refs = [r["reference"] for r in records]
    metrics = exact_match(preds, refs)

    if judge is not None:
        scores = []
        for rec, pred in zip(records, preds):
            question = rec["messages"][-1]["content"]
            try:
                scores.append(judge.score(question, rec["reference"], pred))
            except requests.RequestException as exc:
                logger.warning("judge call failed permanently: %s", exc)
        if scores:
            metrics["judge_score"] = sum(scores) / len(scores)
            metrics["judge_coverage"] = len(scores) / len(records)

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "predictions.jsonl"), "w", encoding="utf-8") as fh:
        for rec, pred in zip(records, preds):
            fh.write(json.dumps({"prompt": rec["messages"], "reference": rec["reference"], "prediction": pred}) + "\n")
    dump_json(metrics, os.path.join(out_dir, "eval_metrics.json"))
    logger.info("eval: %s", json.dumps(metrics))
    return metrics

