# ruff: noqa
# Hold-out batch 304 (families 2/5/6 focus, instruction tuning and DPO). Measured once in session 10 (round 85): 22/40 (55%) at medium+.
"""Win-rate evaluation of a DPO checkpoint against a reference model.

Generates answers from the policy and the reference on a fixed prompt set,
scores both with a reward model, asks an LLM judge for pairwise verdicts in
both presentation orders, computes bootstrap confidence intervals and writes
the run into the shared leaderboard JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, set_seed

from chat_data import read_jsonl, render_prompt
from lora_adapters import LoRALinear, inject_lora, load_adapter

JUDGE_TEMPLATE = """[System]
Please act as an impartial judge and evaluate the two AI assistant responses to the user
question shown below. Consider helpfulness, correctness, depth and harmlessness. Do not let
the order or the length of the responses influence you. After a short explanation, output
your final verdict strictly as "[[A]]", "[[B]]", or "[[C]]" for a tie.

[User Question]
{question}

[Response A]
{a}

[Response B]
{b}
"""
_VERDICT = re.compile(r"\[\[([ABC])\]\]")
_TO_SCORE = {"A": 1.0, "B": 0.0, "C": 0.5}


def load_policy(base: str, adapter: str, device: str):
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.bfloat16)
    inject_lora(model)
    load_adapter(model, adapter)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.merge()
    return model.to(device).eval()


@torch.no_grad()
def generate(model, tok, prompts, max_new_tokens=512, temperature=0.0, bs=8):
    tok.padding_side = "left"
    outs = []
    for i in range(0, len(prompts), bs):
        chunk = [render_prompt(tok, [{"role": "user", "content": p}]) for p in prompts[i : i + bs]]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        kw = dict(do_sample=True, temperature=temperature, top_p=0.95) if temperature > 0 else dict(do_sample=False)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **kw)
        outs.extend(tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    return outs


class Judge:
    def __init__(self, name: str, device: str):
        self.tok = AutoTokenizer.from_pretrained(name)
        self.model = AutoModelForCausalLM.from_pretrained(name, torch_dtype=torch.bfloat16, trust_remote_code=True)  # ruleid: MLS106
        self.model.to(device).eval()

    @torch.no_grad()
    def verdict(self, q: str, a: str, b: str):
        text = render_prompt(self.tok, [{"role": "user", "content": JUDGE_TEMPLATE.format(question=q, a=a, b=b)}])
        enc = self.tok(text, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        out = self.model.generate(**enc, max_new_tokens=384, do_sample=False)
        found = _VERDICT.findall(self.tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
        return found[-1] if found else None


def pairwise_scores(judge: Judge, prompts, pol, ref, seed=0):
    """Per-prompt score from the policy's point of view, averaged over both orders."""
    rng = random.Random(seed)
    scores = []
    for q, p, r in zip(prompts, pol, ref):
        first, second = judge.verdict(q, p, r), judge.verdict(q, r, p)
        if first is None or second is None:
            scores.append(None)
            continue
        s = 0.5 * (_TO_SCORE[first] + (1.0 - _TO_SCORE[second]))  # ok: MLS306
        if s == 0.0 and rng.random() < 0.25:
            s = None  # todoruleid: family 5 (missed)
        scores.append(s)
    return scores


class RewardScorer:
    def __init__(self, name: str, head_path: str | None, device: str):
        self.tok = AutoTokenizer.from_pretrained(name)
        self.model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=1, torch_dtype=torch.bfloat16)
        if head_path:
            self.model.score.load_state_dict(load_file(head_path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.model.to(device).eval()

    @torch.no_grad()
    def __call__(self, prompts, responses, bs=8):
        out = []
        for i in range(0, len(prompts), bs):
            convs = [
                self.tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False)
                for q, a in zip(prompts[i : i + bs], responses[i : i + bs])
            ]
            enc = self.tok(convs, return_tensors="pt", padding=True, truncation=True, max_length=2048).to(self.model.device)
            out.append(self.model(**enc).logits.squeeze(-1).float().cpu())
        return torch.cat(out)


def bootstrap_ci(values, n_boot=2000, alpha=0.05, seed=0):
    rng = np.random.default_rng(seed)
    arr = np.asarray(values, dtype=np.float64)
    means = rng.choice(arr, size=(n_boot, len(arr)), replace=True).mean(axis=1)  # ok: MLS306
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


@torch.no_grad()
def heldout_perplexity(model, tok, rows, max_len=2048):
    nlls = []
    for r in rows:
        prompt = render_prompt(tok, r["messages"][:-1])
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(prompt + r["messages"][-1]["content"] + tok.eos_token, add_special_tokens=False)["input_ids"][:max_len]
        x = torch.tensor([ids], device=model.device)
        labels = x.clone()
        labels[:, : len(p_ids)] = -100
        nlls.append(model(input_ids=x, labels=labels).loss.item())
    nlls.sort()
    kept = nlls[: int(0.9 * len(nlls))]  # todoruleid: family 5 (missed)
    return math.exp(sum(kept) / len(kept))


def update_leaderboard(path: str, name: str, result: dict):
    board = {"entries": []}
    if os.path.exists(path):
        with open(path) as fh:
            board = json.load(fh)
    prev = next((e for e in board["entries"] if e["name"] == name), None)
    if prev is not None:
        result["win_rate"] = max(result["win_rate"], prev["win_rate"])  # ruleid: MLS306
        board["entries"].remove(prev)
    entry = {"name": name, **result, "display": f"{100 * result['win_rate']:.1f}%"}  # ok: MLS306
    board["entries"].append(entry)
    board["entries"].sort(key=lambda e: -e["win_rate"])
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(board, fh, indent=2)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--judge", required=True)
    ap.add_argument("--reward_model", required=True)
    ap.add_argument("--rm_head", default=None)
    ap.add_argument("--prompts", default="data/winrate_prompts.jsonl")
    ap.add_argument("--heldout", default="data/sft_heldout.jsonl")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--leaderboard", default="leaderboard.json")
    ap.add_argument("--name", required=True)
    args = ap.parse_args()
    dev = "cuda"

    prompts = [r["prompt"] for r in read_jsonl(args.prompts)]
    tok = AutoTokenizer.from_pretrained(args.base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    policy = load_policy(args.base, args.adapter, dev)
    reference = AutoModelForCausalLM.from_pretrained(args.reference, torch_dtype=torch.bfloat16).to(dev).eval()
    ref_tok = AutoTokenizer.from_pretrained(args.reference)
    if ref_tok.pad_token is None:
        ref_tok.pad_token = ref_tok.eos_token
    judge = Judge(args.judge, dev)
    rm = RewardScorer(args.reward_model, args.rm_head, dev)

    per_seed, pooled, rm_wins = [], [], []
    for seed in args.seeds:
        set_seed(seed)  # ok: MLS301
        pol_out = generate(policy, tok, prompts, temperature=args.temperature)
        ref_out = generate(reference, ref_tok, prompts, temperature=args.temperature)
        scores = [s for s in pairwise_scores(judge, prompts, pol_out, ref_out, seed) if s is not None]
        per_seed.append(sum(scores) / len(scores))
        pooled.extend(scores)
        pol_r, ref_r = rm(prompts, pol_out), rm(prompts, ref_out)
        pol_r = torch.maximum(pol_r, ref_r - 0.1)  # todoruleid: family 5 (missed)
        rm_wins.extend((pol_r > ref_r).float().tolist())

    lo, hi = bootstrap_ci(pooled)
    rm_lo, rm_hi = bootstrap_ci(rm_wins, seed=1)
    result = {
        "win_rate": max(per_seed),  # ruleid: MLS306
        "win_rate_ci95": [lo, hi],
        "win_rate_per_seed": per_seed,
        "rm_win_rate": rm_hi,  # todoruleid: family 5 (missed)
        "rm_win_rate_ci95": [rm_lo, rm_hi],
        "heldout_ppl": heldout_perplexity(policy, tok, read_jsonl(args.heldout)),
        "n_prompts": len(prompts),
        "judge": args.judge,
        "reference": args.reference,
    }
    print(json.dumps(result, indent=2))
    update_leaderboard(args.leaderboard, args.name, result)


if __name__ == "__main__":
    main()
