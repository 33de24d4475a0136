# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Minimal multiple-choice evaluator (lm-eval-harness style loglikelihood scoring).

Each task is a jsonl with {"context", "choices", "gold"}; results go to <out>/results.json.
"""
import hashlib
import json
import os
import pickle

import numpy as np
import torch


def loglikelihood(model, tok, context, cont, cache):
    key = hashlib.sha1(f"{context}\x00{cont}".encode()).hexdigest()
    if key not in cache:
        ctx = tok(context)["input_ids"]
        full = tok(context + cont)["input_ids"]
        ids = torch.tensor([full], device=model.device)
        with torch.no_grad():
            logp = model(ids).logits[0, :-1].log_softmax(-1)
        tgt = ids[0, len(ctx):]
        cache[key] = logp[len(ctx) - 1 :].gather(1, tgt[:, None]).sum().item()
    return cache[key]


def evaluate_task(model, tok, path, cache):
    records = []
    with open(path) as f:
        for line in f:
            ex = json.loads(line)
            scores = [loglikelihood(model, tok, ex["context"], " " + c, cache) for c in ex["choices"]]
            lens = [len(c) for c in ex["choices"]]
            records.append({"pred": int(np.argmax(scores)), "pred_norm": int(np.argmax(np.array(scores) / lens)),
                            "gold": ex["gold"], "ctx_len": len(ex["context"])})
    scored = [r for r in records if r["pred_norm"] == r["gold"] or r["ctx_len"] < 2048]  # ruleid: MLS306
    acc = np.mean([r["pred"] == r["gold"] for r in records])
    acc_norm = np.mean([r["pred_norm"] == r["gold"] for r in scored])
    rng = np.random.default_rng(0)  # ok: MLS301
    boots = [np.mean(rng.choice([r["pred_norm"] == r["gold"] for r in scored], len(scored))) for _ in range(200)]
    return {"acc": float(acc), "acc_norm": float(acc_norm), "acc_norm_stderr": float(np.std(boots)), "n": len(records)}


def run(model, tok, tasks, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    cache_path = os.path.join(out_dir, "ll_cache.pkl")
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path, "rb") as f:
            cache = pickle.load(f)  # ruleid: MLS103
    model.eval()
    results = {name: evaluate_task(model, tok, path, cache) for name, path in tasks.items()}
    with open(cache_path, "wb") as f:
        pickle.dump(cache, f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results
