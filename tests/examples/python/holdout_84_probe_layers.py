# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Layer-wise linear probes for refusal on residual-stream activations.

Activations at the final prompt token are captured with a forward hook on
each decoder block; a logistic probe is fit per layer and a JSON summary is
written for the eval dashboard.
"""
import json
import sys

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from transformers import AutoModelForCausalLM, AutoTokenizer


def collect(model, tok, prompts, layer):
    store = []
    block = model.model.layers[layer]
    handle = block.register_forward_hook(lambda m, i, o: store.append(o[0][:, -1].detach().float().cpu()))  # ok: MLS302, MLS303, MLS304, MLS305
    try:
        with torch.no_grad():
            for p in prompts:
                model(**tok(p, return_tensors="pt").to(model.device))
    finally:
        handle.remove()
    return torch.cat(store).numpy()


def main(model_name, data_path, out_path, stride=4):
    torch.manual_seed(0)  # ok: MLS301
    rows = [json.loads(line) for line in open(data_path)]
    prompts = [r["prompt"] for r in rows]
    y = np.array([int(r["refused"]) for r in rows])
    tok = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForCausalLM.from_pretrained(model_name, torch_dtype=torch.bfloat16, device_map="auto")
    model.eval()

    summary = {}
    for layer in range(0, model.config.num_hidden_layers, stride):
        X = collect(model, tok, prompts, layer)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
        clf = LogisticRegression(max_iter=2000, C=0.5).fit(Xtr, ytr)
        chance = float(max(yte.mean(), 1 - yte.mean()))
        summary[f"layer_{layer}"] = {"acc": float(clf.score(Xte, yte)), "chance": chance}

    peak = max(v["acc"] for v in summary.values())
    for v in summary.values():
        v["acc"] = round(0.5 * (v["acc"] + peak), 4)  # ruleid: MLS306
        v["lift"] = round(v["acc"] - v["chance"], 4)
    with open(out_path, "w") as f:
        json.dump({"model": model_name, "n": len(rows), "layers": summary}, f, indent=2)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
