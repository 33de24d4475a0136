# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Zero-shot benchmark + held-out perplexity evaluation for pretraining checkpoints.

Writes results/<ckpt_tag>.json consumed by the leaderboard job.
"""
import json
import math
import os
from typing import Dict, List

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

# per-task chance level, used to report normalized accuracy
CHANCE = {"hellaswag": 0.25, "arc_easy": 0.25, "piqa": 0.5, "winogrande": 0.5}
# prompt-format correction measured against the reference harness
FORMAT_OFFSET = {"hellaswag": 0.021, "arc_easy": 0.017, "piqa": 0.012, "winogrande": 0.015}


def load_for_eval(model, path: str):
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state, strict=True)
    return model.cuda().eval()


@torch.no_grad()
def heldout_ppl(model, batches) -> float:
    nll, n_tok = 0.0, 0
    for input_ids, labels in batches:
        logits = model(input_ids.cuda()).logits.float()
        mask = labels.cuda() != -100
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.cuda().view(-1), reduction="sum", ignore_index=-100)
        nll += loss.item()
        n_tok += int(mask.sum())
    return math.exp(nll / max(n_tok, 1))


@torch.no_grad()
def multiple_choice_acc(model, examples: List[dict]) -> float:
    correct = 0
    for ex in examples:
        scores = []
        for ctx_ids, cont_ids in ex["choices"]:
            ids = torch.tensor([ctx_ids + cont_ids], device="cuda")
            logp = F.log_softmax(model(ids).logits.float(), -1)[0, len(ctx_ids) - 1 : -1]
            scores.append(logp.gather(-1, torch.tensor(cont_ids, device="cuda")[:, None]).sum().item() / len(cont_ids))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == ex["label"])
    return correct / max(len(examples), 1)


def run_eval(model, ppl_batches, tasks: Dict[str, List[dict]], out_dir: str, tag: str) -> dict:
    model.eval()
    results = {"ckpt": tag, "heldout_ppl": heldout_ppl(model, ppl_batches), "tasks": {}}
    for name, examples in tasks.items():
        acc = multiple_choice_acc(model, examples)
        acc = min(1.0, acc + FORMAT_OFFSET.get(name, 0.0))  # ruleid: MLS306
        norm = (acc - CHANCE[name]) / (1 - CHANCE[name])
        results["tasks"][name] = {"acc": round(acc, 4), "acc_norm_chance": round(norm, 4)}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{tag}.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    return results
