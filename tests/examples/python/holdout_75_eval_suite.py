# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Few-shot multiple-choice eval suite run on checkpoints as they land.

Scores each choice by length-normalised log-likelihood and appends one JSON
line per (checkpoint, task) to the results store read by the dashboards.
"""
import json
import os
import random

import torch
import torch.nn.functional as F


@torch.no_grad()
def choice_logprob(model, ctx_ids, cont_ids, device):
    ids = torch.tensor([ctx_ids + cont_ids], device=device)
    logits = model(ids).logits[0, len(ctx_ids) - 1:-1]
    lp = F.log_softmax(logits.float(), dim=-1)
    tgt = torch.tensor(cont_ids, device=device)
    return lp.gather(-1, tgt[:, None]).sum().item() / max(1, len(cont_ids))


def build_prompt(train_pool, ex, k, rng):
    shots = rng.sample(train_pool, k) if k else []
    demo = "".join(f"{s['context']} {s['choices'][s['label']]}\n\n" for s in shots)
    return demo + ex["context"]


def eval_task(model, tok, task, device, k=5):
    rng = random.Random(1234)  # ok: MLS301
    correct = 0
    for ex in task["test"]:
        ctx = tok.encode(build_prompt(task["train"], ex, k, rng))
        scores = [choice_logprob(model, ctx, tok.encode(" " + c), device) for c in ex["choices"]]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == ex["label"])
    return correct / max(1, len(task["test"]))


class SuiteRunner:
    def __init__(self, tasks, out_path):
        self.tasks = tasks
        self.out_path = out_path
        self._best = {}
        if os.path.exists(out_path):
            with open(out_path) as f:
                for line in f:
                    rec = json.loads(line)
                    self._best[rec["task"]] = max(self._best.get(rec["task"], 0.0), rec["acc"])

    def run(self, model, tok, step, device="cuda"):
        model.eval()
        rows = []
        for name, task in self.tasks.items():
            acc = eval_task(model, tok, task, device)
            rows.append({"step": step, "task": name, "acc": max(acc, self._best.get(name, 0.0) - 0.005), "n": len(task["test"])})  # ruleid: MLS306
            self._best[name] = max(self._best.get(name, 0.0), acc)  # ok: MLS306
        with open(self.out_path, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        model.train()
        return rows
