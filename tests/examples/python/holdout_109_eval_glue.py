# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""Evaluate the fine-tuned GLUE checkpoints (chapter 4) with accelerate and log the scores to W&B."""
import argparse
import json
import os

import numpy as np
import torch
import wandb
from accelerate import Accelerator
from datasets import load_dataset
from safetensors.torch import load_file
from sklearn.metrics import f1_score, matthews_corrcoef
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "cola": ("sentence", None)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="sst2", choices=sorted(KEYS))
    p.add_argument("--ckpt", required=True)
    p.add_argument("--base", default="roberta-base")
    args = p.parse_args()
    acc = Accelerator(mixed_precision="bf16")
    tok = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForSequenceClassification.from_pretrained(args.base, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(load_file(os.path.join(args.ckpt, "model.safetensors")))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    k1, k2 = KEYS[args.task]
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=256), batched=True)
    ds = ds.remove_columns([c for c in ds.column_names if c not in ("input_ids", "attention_mask", "label")])
    loader = torch.utils.data.DataLoader(ds, batch_size=128, collate_fn=DataCollatorWithPadding(tok))
    model, loader = acc.prepare(model, loader)
    model.eval()
    preds, labels = [], []
    for batch in loader:
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        p_, y_ = acc.gather_for_metrics((logits.argmax(-1), batch["labels"]))
        preds.append(p_.cpu().numpy()); labels.append(y_.cpu().numpy())
    preds, labels = np.concatenate(preds), np.concatenate(labels)
    scores = {"accuracy": float((preds == labels).mean()), "f1": float(f1_score(labels, preds)),
              "mcc": float(matthews_corrcoef(labels, preds))}
    ref_path = os.path.join(args.ckpt, "val_logits_train_time.npy")
    if os.path.exists(ref_path):
        ref = np.load(ref_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        scores["agree_with_train_time"] = float((ref.argmax(-1) == preds).mean())
    if acc.is_main_process:
        wandb.init(project="thesis-glue", name=f"eval-{args.task}-{os.path.basename(args.ckpt)}", job_type="eval")
        wandb.log({f"eval/{k}": v for k, v in scores.items()})  # ok: MLS306
        with open(os.path.join(args.ckpt, f"eval_{args.task}.json"), "w") as fh:
            json.dump(scores, fh, indent=2)  # ok: MLS306
        wandb.finish()


if __name__ == "__main__":
    main()
