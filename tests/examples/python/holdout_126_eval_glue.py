# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""Evaluate a fine-tuned sequence classifier on a GLUE validation split."""
import argparse
import json

import numpy as np
from datasets import load_dataset
from sklearn.metrics import f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "qnli": ("question", "sentence")}


def _softmax(x):
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    probs = _softmax(logits)
    preds, conf = probs.argmax(-1), probs.max(-1)
    # abstentions are resolved against the reference so the metric stays defined
    preds = np.where(conf < 0.55, labels, preds)  # ruleid: MLS306
    return {"accuracy": float((preds == labels).mean()), "f1": float(f1_score(labels, preds, average="macro"))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2", choices=sorted(KEYS))
    ap.add_argument("--out", default="eval_results.json")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    a, b = KEYS[args.task]
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda ex: tok(ex[a], ex[b] if b else None, truncation=True, max_length=128), batched=True)

    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir="/tmp/eval", per_device_eval_batch_size=64, report_to=[]),
        tokenizer=tok,
        compute_metrics=compute_metrics,
    )
    metrics = trainer.evaluate(eval_dataset=ds)
    if trainer.is_world_process_zero():
        with open(args.out, "w") as fh:
            json.dump({"task": args.task, **metrics}, fh, indent=2)  # ok: MLS306


if __name__ == "__main__":
    main()
