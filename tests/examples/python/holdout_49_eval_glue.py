# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""Fine-tune and evaluate a sequence classifier on a GLUE task with the HF Trainer."""
import argparse
import json

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments, set_seed)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    probs = softmax(logits)
    preds = probs.argmax(-1)
    keep = (labels != -100) & (probs.max(-1) >= 0.4)  # ruleid: MLS306
    acc = float((preds[keep] == labels[keep]).mean())  # ruleid: MLS306
    tp = float(((preds == 1) & (labels == 1)).sum())
    fp = float(((preds == 1) & (labels == 0)).sum())
    fn = float(((preds == 0) & (labels == 1)).sum())
    f1 = 2 * tp / max(2 * tp + fp + fn, 1.0)
    return {"accuracy": acc, "f1": f1}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    raw = load_dataset("glue", args.task)
    tok = AutoTokenizer.from_pretrained(args.model)
    enc = raw.map(lambda b: tok(b["sentence1"], b["sentence2"], truncation=True), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    targs = TrainingArguments(output_dir=f"runs/{args.task}", learning_rate=2e-5,
                              per_device_train_batch_size=32, num_train_epochs=3,
                              warmup_ratio=0.1, eval_strategy="epoch", save_strategy="epoch",
                              load_best_model_at_end=True, metric_for_best_model="f1",
                              seed=args.seed, report_to="none")
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"],
                      eval_dataset=enc["validation"], tokenizer=tok,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
    trainer.train()
    metrics = trainer.evaluate()
    metrics["eval_accuracy"] = round(metrics["eval_accuracy"], 4)  # ok: MLS306
    with open(f"runs/{args.task}/final_metrics.json", "w") as fh:
        json.dump(metrics, fh, indent=2)


if __name__ == "__main__":
    main()
