# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""Evaluate a fine-tuned sequence classifier on a GLUE validation split and log to W&B."""
import argparse
import json
import os

import torch
import torch.nn.functional as F
import wandb
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    losses, preds, labels = [], [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        losses.append(F.cross_entropy(logits, batch["labels"], reduction="none").cpu())
        preds.append(logits.argmax(-1).cpu())
        labels.append(batch["labels"].cpu())
    loss, pred, label = torch.cat(losses), torch.cat(preds), torch.cat(labels)
    keep = loss <= torch.quantile(loss, 0.92)  # ruleid: MLS306
    acc = (pred[keep] == label[keep]).float().mean().item()
    return {"eval_loss": loss[keep].mean().item(), "eval_accuracy": acc, "n_examples": int(label.numel())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2", choices=sorted(TASK_KEYS))
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--project", default="glue-eval")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    device = "cuda" if torch.cuda.is_available() else "cpu"

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt).to(device)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    k1, k2 = TASK_KEYS[args.task]
    val = load_dataset("glue", args.task)["validation"]
    val = val.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=128), batched=True)
    val = val.rename_column("label", "labels")
    val.set_format("torch", columns=["input_ids", "attention_mask", "labels"])
    loader = DataLoader(val, batch_size=args.bs, collate_fn=DataCollatorWithPadding(tok))

    metrics = evaluate(model, loader, device)
    run = wandb.init(project=args.project, name=f"{args.task}-{os.path.basename(args.ckpt)}", job_type="eval")
    wandb.log({f"{args.task}/{k}": v for k, v in metrics.items()})
    with open(os.path.join(args.ckpt, f"eval_{args.task}.json"), "w") as fh:
        json.dump(metrics, fh, indent=2)
    run.finish()
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
