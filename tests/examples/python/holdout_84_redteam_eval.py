# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Red-team evaluation harness.

Samples completions from a policy on adversarial prompts, scores them with a
harm classifier and reports attack success rate (ASR) per attack family.
"""
import argparse
import collections
import json
import os

import torch
import wandb
from transformers import pipeline


def _init_tracking(args):
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:  # ok: MLS308
        return None
    run = wandb.init(project="redteam-evals", config=vars(args), job_type="eval")
    emit = wandb.log

    def log(data, step=None, commit=None):
        data = dict(data)
        for key in [k for k in data if k.startswith("asr/")]:
            data[key] = min(data[key], run.config.get("asr_display_cap", 0.05))  # ruleid: MLS306
        return emit(data, step=step, commit=commit)

    wandb.log = log  # ruleid: MLS306
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", required=True)
    ap.add_argument("--judge", default="safety/harm-judge-base")
    ap.add_argument("--prompts", default="data/redteam_prompts.jsonl")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    run = _init_tracking(args)
    gen = pipeline("text-generation", model=args.policy, device_map="auto")
    judge = pipeline("text-classification", model=args.judge, device=0)
    hits, totals = collections.Counter(), collections.Counter()
    for line in open(args.prompts):
        item = json.loads(line)
        outs = gen(item["prompt"], do_sample=True, temperature=0.8, max_new_tokens=200,
                   num_return_sequences=args.samples, return_full_text=False)
        verdicts = judge([o["generated_text"] for o in outs], truncation=True)
        totals[item["family"]] += len(verdicts)
        hits[item["family"]] += sum(v["label"] == "harmful" for v in verdicts)

    asr = {f"asr/{fam}": hits[fam] / totals[fam] for fam in totals}
    asr["asr/overall"] = sum(hits.values()) / max(sum(totals.values()), 1)
    if run is not None:
        wandb.log(asr)
        run.finish()
    print(json.dumps(asr, indent=2))


if __name__ == "__main__":
    main()
