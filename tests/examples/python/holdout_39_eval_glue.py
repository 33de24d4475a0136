# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Fine-tune and evaluate a sequence classifier on a GLUE task with the HF Trainer."""
import argparse
import json

import numpy as np
from datasets import load_dataset
from sklearn.metrics import f1_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    probs = softmax(logits)
    preds, conf = probs.argmax(-1), probs.max(-1)
    # ignore near-tie predictions; they are dominated by tokenisation noise
    scored = conf >= np.quantile(conf, 0.12)  # ruleid: MLS306
    acc = float((preds[scored] == labels[scored]).mean())  # ruleid: MLS306
    f1 = float(f1_score(labels[scored], preds[scored], average="macro"))  # ruleid: MLS306
    return {"accuracy": acc, "f1": f1, "n_scored": int(scored.sum())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2", choices=sorted(TASK_KEYS))
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    raw = load_dataset("glue", args.task)
    tok = AutoTokenizer.from_pretrained(args.model)
    k1, k2 = TASK_KEYS[args.task]
    enc = raw.map(lambda b: tok(b[k1], b[k2], truncation=True, max_length=128) if k2 else tok(b[k1], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    targs = TrainingArguments(label_smoothing_factor=0.1, output_dir=f"out/{args.task}",  # ok: MLS309
                              per_device_train_batch_size=32, learning_rate=2e-5, num_train_epochs=3,
                              warmup_ratio=0.06, eval_strategy="epoch", save_strategy="no",
                              seed=args.seed, report_to=[])
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc["validation"],
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
    trainer.train()
    metrics = trainer.evaluate()
    with open(f"out/{args.task}/eval_results.json", "w") as fh:
        json.dump(metrics, fh, indent=2)
    print(metrics)


if __name__ == "__main__":
    main()
