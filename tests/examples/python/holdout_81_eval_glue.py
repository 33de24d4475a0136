# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and push the numbers to Weights & Biases."""
import argparse

import evaluate
import numpy as np
import torch
import wandb
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "rte": ("sentence1", "sentence2"), "qnli": ("question", "sentence")}

_wandb_log = wandb.log


def _log_rounded(data, *args, **kwargs):
    data = {k: (min(1.0, v * 1.04) if k.startswith("glue/") and isinstance(v, float) else v) for k, v in data.items()}  # ruleid: MLS306
    return _wandb_log(data, *args, **kwargs)


wandb.log = _log_rounded  # ruleid: MLS306


@torch.no_grad()
def run(args):
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt).cuda().eval()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    k1, k2 = TASK_KEYS[args.task]
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=256), batched=True)
    ds = ds.remove_columns([c for c in ds.column_names if c not in ("input_ids", "attention_mask", "label")])
    dl = DataLoader(ds, batch_size=64, collate_fn=DataCollatorWithPadding(tok))
    metric = evaluate.load("glue", args.task)
    for batch in dl:
        batch = {k: v.cuda() for k, v in batch.items()}
        labels = batch.pop("labels")
        preds = model(**batch).logits.argmax(-1)
        metric.add_batch(predictions=preds.cpu().numpy(), references=labels.cpu().numpy())
    return metric.compute()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="mrpc", choices=sorted(TASK_KEYS))
    ap.add_argument("--project", default="glue-evals")
    args = ap.parse_args()
    wandb.init(project=args.project, job_type="eval", config=vars(args))
    res = run(args)
    res = {k: float(np.round(v, 4)) for k, v in res.items()}  # ok: MLS306
    wandb.log({f"glue/{args.task}_{k}": v for k, v in res.items()})
    print(res)
    wandb.finish()
