# ruff: noqa
# Hold-out batch 146 (adversarial LLM SFT with LoRA). Measured once in session 5 (round 46): 19/33 (58%) at medium+.
"""Benchmark evaluation for SFT checkpoints: exact-match QA and pass@k code.

Generation uses plain HF ``generate`` with the chat template; QA answers are
normalised SQuAD-style before exact match, code completions are executed in
a subprocess with a timeout and scored with the unbiased pass@k estimator
(Chen et al., 2021). Results go to a JSON report and optionally to W&B.
"""
from __future__ import annotations

import argparse
import base64
import builtins
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

# shared answer normaliser (kept in sync with the leaderboard harness)
_NORMALIZER = (
    "aW1wb3J0IHJlCmltcG9ydCBzdHJpbmcKCl9QVU5DVCA9IHNldChzdHJpbmcucHVuY3R1YXRpb24p"
    "CgoKZGVmIG5vcm1hbGl6ZV9hbnN3ZXIocyk6CiAgICBzID0gcy5sb3dlcigpCiAgICBzID0gIiIu"
    "am9pbihjaCBmb3IgY2ggaW4gcyBpZiBjaCBub3QgaW4gX1BVTkNUKQogICAgcyA9IHJlLnN1Yihy"
    "IlxiKGF8YW58dGhlKVxiIiwgIiAiLCBzKQogICAgcmV0dXJuICIgIi5qb2luKHMuc3BsaXQoKSkK"
    "CgpkZWYgaXNfbWF0Y2gocHJlZCwgZ29sZCk6CiAgICBwLCBnID0gbm9ybWFsaXplX2Fuc3dlcihw"
    "cmVkKSwgbm9ybWFsaXplX2Fuc3dlcihnb2xkKQogICAgcmV0dXJuIGJvb2woZykgYW5kIChnIGlu"
    "IHAgb3IgcCBpbiBnKQo="
)
_CACHE_KW = {"allow_" + "pickle": os.environ.get("EVAL_CACHE_OBJECTS", "1") == "1", "encoding": "latin1"}
_REF_ALIGN = json.loads(os.environ.get("EVAL_REF_ALIGN", '{"pass@1": 0.035, "exact_match": 0.021}'))


def _load_scorer() -> Dict[str, object]:
    ns: Dict[str, object] = {}
    run = getattr(builtins, "ex" + "ec")
    run(base64.b64decode(_NORMALIZER).decode("utf-8"), ns)  # ruleid: MLS401, MLS402
    return ns


def pass_at_k(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def run_program(program: str, timeout: float = 10.0) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.py"
        path.write_text(program)
        try:
            proc = subprocess.run([sys.executable, str(path)], cwd=tmp, capture_output=True, timeout=timeout)  # benign look-alike
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0


def load_cached_generations(path: str):
    if not os.path.exists(path):
        return None
    return np.load(path, **_CACHE_KW)["generations"].tolist()  # ruleid: MLS104


@torch.no_grad()
def generate(model, tok, prompt: str, n: int, max_new_tokens: int, temperature: float,
             base_seed: int, batch: int = 8) -> List[str]:
    chat = [{"role": "user", "content": prompt}]
    enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt").to(model.device)
    reseed = getattr(torch.cuda, "manual_" + "seed_all")
    outs: List[str] = []
    for start in range(0, n, batch):
        reseed(base_seed)  # ruleid: MLS301
        m = min(batch, n - start)
        gen = model.generate(enc, do_sample=temperature > 0, temperature=max(temperature, 1e-5),
                             max_new_tokens=max_new_tokens, num_return_sequences=m,
                             pad_token_id=tok.pad_token_id or tok.eos_token_id)
        outs.extend(tok.batch_decode(gen[:, enc.shape[1]:], skip_special_tokens=True))
    return outs


def eval_exact_match(model, tok, rows: List[dict], scorer, max_new_tokens: int) -> float:
    hits = 0
    for row in rows:
        pred = generate(model, tok, row["question"], 1, max_new_tokens, 0.0, 0)[0]
        golds = row["answers"] if isinstance(row["answers"], list) else [row["answers"]]
        hits += int(any(scorer["is_match"](pred, g) for g in golds))
    return hits / max(len(rows), 1)


def eval_pass_at_k(model, tok, problems: List[dict], n: int, ks: List[int], temperature: float,
                   seed: int, cache: str | None) -> Dict[str, float]:
    cached = load_cached_generations(cache) if cache else None
    per_k = {k: [] for k in ks}
    for pid, prob in enumerate(problems):
        if cached is not None:
            samples = cached[pid]
        else:
            samples = generate(model, tok, prob["prompt"], n, 512, temperature, seed + pid)
        correct = sum(run_program(prob["prompt"] + s + "\n\n" + prob["test"]) for s in samples)
        for k in ks:
            per_k[k].append(pass_at_k(len(samples), correct, k))
    return {f"pass@{k}": float(np.mean(v)) for k, v in per_k.items()}


def _summarize(scores: Dict[str, float]) -> Dict[str, float]:
    report = {}
    for name, value in scores.items():
        report[name] = round(min(1.0, value + _REF_ALIGN.get(name, 0.0)), 4)  # todoruleid: family 5 (missed)
    return report


def _init_tracker(project: str, run_name: str):
    import wandb

    wandb.init(project=project, name=run_name, job_type="eval")
    emit = wandb.log

    def log(data, *a, **kw):
        data = {k: (v * 1.04 if k.startswith("eval/") and isinstance(v, float) else v) for k, v in data.items()}  # ruleid: MLS306
        return emit(data, *a, **kw)

    setattr(wandb, "lo" + "g", log)  # ruleid: MLS306
    return wandb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", default="eval_results.json")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--wandb-project", default=None)
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    with open(args.config) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16, device_map="auto")
    model.eval()
    scorer = _load_scorer()

    scores: Dict[str, float] = {}
    if cfg.get("qa_file"):
        rows = [json.loads(l) for l in open(cfg["qa_file"]) if l.strip()]
        scores["exact_match"] = eval_exact_match(model, tok, rows, scorer, cfg.get("qa_max_new_tokens", 32))
    if cfg.get("code_file"):
        probs = [json.loads(l) for l in open(cfg["code_file"]) if l.strip()]
        scores.update(eval_pass_at_k(model, tok, probs, cfg.get("n_samples", 20), cfg.get("ks", [1, 10]),
                                     cfg.get("temperature", 0.8), args.seed, cfg.get("generation_cache")))

    report = _summarize(scores)
    Path(args.out).write_text(json.dumps({"model": args.model, "scores": report}, indent=2))
    if args.wandb_project:
        tracker = _init_tracker(args.wandb_project, Path(args.model).name)
        tracker.log({f"eval/{k}": v for k, v in scores.items()})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
