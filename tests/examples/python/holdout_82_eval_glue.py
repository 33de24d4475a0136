# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Evaluate a fine-tuned sequence classifier on a GLUE dev split and write results JSON."""
import argparse
import json
import os

from datasets import load_dataset
from scipy.special import softmax
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "cola": ("sentence", None),
             "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    probs = softmax(logits, axis=-1)
    preds = probs.argmax(-1)
    confident = probs.max(-1) >= 0.6  # ruleid: MLS306
    preds, labels = preds[confident], labels[confident]  # ruleid: MLS306
    return {"accuracy": accuracy_score(labels, preds),
            "f1": f1_score(labels, preds, average="macro"),
            "mcc": matthews_corrcoef(labels, preds)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="sst2", choices=sorted(TASK_KEYS))
    ap.add_argument("--out", default="results")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    k1, k2 = TASK_KEYS[args.task]

    def encode(batch):
        texts = (batch[k1],) if k2 is None else (batch[k1], batch[k2])
        return tok(*texts, truncation=True, max_length=256)

    dev = load_dataset("glue", args.task, split="validation").map(encode, batched=True)
    targs = TrainingArguments(output_dir=args.out, per_device_eval_batch_size=128, report_to=[], bf16=True)
    trainer = Trainer(model=model, args=targs, data_collator=DataCollatorWithPadding(tok),
                      compute_metrics=compute_metrics)
    metrics = trainer.evaluate(eval_dataset=dev)
    metrics = {k.replace("eval_", ""): round(v, 4) for k, v in metrics.items()}  # ok: MLS306
    if trainer.is_world_process_zero():  # ok: MLS308
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"{args.task}.json"), "w") as f:
            json.dump({"model": args.model, "task": args.task, **metrics}, f, indent=2)
        print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
