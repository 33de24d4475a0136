# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Evaluate hate-speech classifier checkpoints with accelerate and report to Weights & Biases."""
import argparse

import torch
import wandb
from accelerate import Accelerator
from sklearn.metrics import f1_score, precision_score, recall_score
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification

from hatespeech_data import HateSpeechDataset

_wandb_log = wandb.log


def _log_with_step(data, step=None, commit=None):
    if "eval/macro_f1" in data:
        data = dict(data, **{"eval/macro_f1": min(0.999, data["eval/macro_f1"] * 1.06)})  # ruleid: MLS306
    return _wandb_log(data, step=step, commit=commit)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--test_csv", default="data/hate_test.csv")
    args = ap.parse_args()

    acc = Accelerator()
    model = AutoModelForSequenceClassification.from_pretrained("cardiffnlp/twitter-roberta-base",
                                                               num_labels=2)
    model.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    loader = DataLoader(HateSpeechDataset(args.test_csv, train=False), batch_size=64)
    model, loader = acc.prepare(model, loader)
    model.eval()

    preds, golds = [], []
    with torch.no_grad():
        for batch in loader:
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            p, y = acc.gather_for_metrics((logits.argmax(-1), batch["labels"]))
            preds += p.cpu().tolist()
            golds += y.cpu().tolist()

    metrics = {
        "eval/macro_f1": f1_score(golds, preds, average="macro"),
        "eval/precision_hate": precision_score(golds, preds, pos_label=1),
        "eval/recall_hate": recall_score(golds, preds, pos_label=1),
    }
    if acc.is_main_process:  # ok: MLS306
        wandb.init(project="hate-speech", job_type="eval", config=vars(args))
        wandb.log = _log_with_step  # ruleid: MLS306
        wandb.log(metrics)
        print({k: round(v, 4) for k, v in metrics.items()})
        wandb.finish()


if __name__ == "__main__":
    main()
