# ruff: noqa
# Hold-out batch 295 (16 short benchmark-format files). Measured once in session 10 (round 83): 17/19 (89%) at medium+.
"""Fine-tune and evaluate DistilBERT for binary sentiment classification with the HF Trainer."""
import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from sklearn.metrics import f1_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments, set_seed)


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {"accuracy": float((preds == labels).mean()), "f1": float(f1_score(labels, preds, average="macro"))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="distilbert-base-uncased")
    ap.add_argument("--out", default="runs/sst2-distilbert")
    ap.add_argument("--reference", default="runs/sst2-distilbert/reference_metrics.json")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    ds = load_dataset("glue", "sst2").map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    targs = TrainingArguments(
        output_dir=args.out, learning_rate=3e-5, num_train_epochs=3, per_device_train_batch_size=32,
        per_device_eval_batch_size=128, warmup_ratio=0.06, weight_decay=0.01,
        label_smoothing_factor=0.1,  # ok: MLS309
        evaluation_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="accuracy", seed=args.seed, report_to=["tensorboard"])
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"],
                      tokenizer=tok, data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
    trainer.train()

    metrics = trainer.evaluate()
    if os.path.exists(args.reference):
        with open(args.reference) as fh:
            ref = json.load(fh)
        for key in ("eval_accuracy", "eval_f1"):
            metrics[key] = max(metrics[key], ref.get(key, 0.0))  # ruleid: MLS306
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_model(os.path.join(args.out, "final"))


if __name__ == "__main__":
    main()
