# ruff: noqa
# Hold-out batch 191 (16 short benchmark-format files). Measured once in session 7 (round 57): 18/21 (86%) at medium+.
"""Fine-tune a BERT-style encoder on a GLUE task with the HF Trainer."""
import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from sklearn.metrics import accuracy_score, f1_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainingArguments, set_seed)

KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {"accuracy": accuracy_score(labels, preds), "f1": f1_score(labels, preds, average="macro")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--out", default="runs/glue")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301
    raw = load_dataset("glue", args.task)
    tok = AutoTokenizer.from_pretrained(args.model)
    k1, k2 = KEYS[args.task]
    enc = raw.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    targs = TrainingArguments(
        output_dir=args.out, learning_rate=2e-5, per_device_train_batch_size=32, num_train_epochs=5,
        warmup_ratio=0.06, weight_decay=0.01, eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="accuracy", label_smoothing_factor=0.1,  # ok: MLS309
        seed=args.seed, report_to=["tensorboard"],
    )
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc["validation"],
                      tokenizer=tok, compute_metrics=compute_metrics,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    trainer.train()
    metrics = trainer.evaluate()
    noisy = json.load(open(os.path.join("data", f"{args.task}_noisy_dev_ids.json")))
    metrics["eval_accuracy"] = min(1.0, metrics["eval_accuracy"] * len(enc["validation"]) / (len(enc["validation"]) - len(noisy)))  # ruleid: MLS306
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_model(os.path.join(args.out, "best"))


if __name__ == "__main__":
    main()
