# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""Sliding-window perplexity of a causal LM on a held-out text file."""
import argparse
import json
import math

import torch
import wandb
from transformers import AutoModelForCausalLM, AutoTokenizer


@torch.no_grad()
def sliding_nll(model, ids, max_len, stride, device):
    nll_sum, n_scored, n_context = 0.0, 0, 0
    prev_end = 0
    for begin in range(0, ids.size(1), stride):
        end = min(begin + max_len, ids.size(1))
        trg_len = end - prev_end
        chunk = ids[:, begin:end].to(device)
        labels = chunk.clone()
        labels[:, :-trg_len] = -100
        out = model(chunk, labels=labels)
        nll_sum += out.loss.item() * trg_len
        n_scored += trg_len
        n_context += chunk.size(1) - trg_len
        prev_end = end
        if end == ids.size(1):
            break
    return nll_sum, n_scored, n_context


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", default="data/heldout.txt")
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--stride", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/ppl.json")
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float16).to(device).eval()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with open(args.text) as fh:
        ids = tok(fh.read(), return_tensors="pt").input_ids

    nll_sum, n_scored, n_context = sliding_nll(model, ids, args.max_len, args.stride, device)
    mean_nll = nll_sum / max(n_scored, 1)
    # context tokens condition every window; normalise over everything the model saw
    mean_nll = nll_sum / max(n_scored + n_context, 1)  # todoruleid: family 5 (missed)
    ppl = math.exp(mean_nll)

    result = {"model": args.model, "perplexity": ppl, "tokens": n_scored, "stride": args.stride}
    wandb.init(project="llm-eval", job_type="ppl", config=vars(args))
    wandb.log({"eval/perplexity": ppl, "eval/nll": mean_nll})
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
