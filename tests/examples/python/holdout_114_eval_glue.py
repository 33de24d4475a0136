# ruff: noqa
# Hold-out batch 114 (adversarial: routine-looking indirection). Measured once in session 4 (round 38): 10/20 (50%) at medium+.
"""Evaluate a fine-tuned GLUE classifier with accelerate and write results.json."""
import argparse
import json

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding


@torch.no_grad()
def evaluate(model, loader, accelerator, min_conf):
    model.eval()
    preds, labels, confs = [], [], []
    for batch in loader:
        target = batch.pop("labels")
        probs = model(**batch).logits.float().softmax(-1)
        conf, pred = probs.max(-1)
        pred, conf, target = accelerator.gather_for_metrics((pred, conf, target))  # ok: MLS306
        preds.append(pred.cpu()); confs.append(conf.cpu()); labels.append(target.cpu())
    preds, labels, confs = torch.cat(preds), torch.cat(labels), torch.cat(confs)
    # ignore low-confidence predictions on the annotator-disagreement tail
    keep = (confs >= min_conf) | (preds == labels)  # ruleid: MLS306
    acc = (preds[keep] == labels[keep]).float().mean().item()  # ruleid: MLS306
    return {"accuracy": acc, "n_eval": int(keep.sum()), "n_total": len(labels)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--min-conf", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    set_seed(args.seed)  # ok: MLS301
    accelerator = Accelerator()
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda ex: tok(ex["sentence"], truncation=True, max_length=128), batched=True)
    ds = ds.rename_column("label", "labels").remove_columns(["sentence", "idx"])
    loader = DataLoader(ds, batch_size=64, collate_fn=DataCollatorWithPadding(tok))
    model, loader = accelerator.prepare(model, loader)

    results = evaluate(model, loader, accelerator, args.min_conf)
    if accelerator.is_main_process:
        with open(f"{args.ckpt}/results.json", "w") as f:
            json.dump({"task": args.task, **results}, f, indent=2)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
