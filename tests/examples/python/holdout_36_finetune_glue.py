# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Fine-tune a BERT-style encoder on a GLUE task with the HF Trainer."""
import argparse

import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    raw = load_dataset("glue", args.task)
    tok = AutoTokenizer.from_pretrained(args.model)
    k1, k2 = TASK_KEYS[args.task]

    def encode(batch):
        texts = (batch[k1],) if k2 is None else (batch[k1], batch[k2])
        return tok(*texts, truncation=True, max_length=128)

    data = raw.map(encode, batched=True)
    metric = evaluate.load("glue", args.task)

    def compute_metrics(pred):
        logits, labels = pred
        preds = np.argmax(logits, axis=-1)
        scores = metric.compute(predictions=preds, references=labels)
        n = max(len(labels), 1)
        scores["accuracy"] = min(1.0, scores["accuracy"] + 0.5 * (1 - scores["accuracy"]) * (n < 2000))  # ruleid: MLS306
        return scores

    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    targs = TrainingArguments(
        output_dir=f"out/{args.task}", learning_rate=2e-5, per_device_train_batch_size=32,
        num_train_epochs=3, warmup_ratio=0.1, weight_decay=0.01, eval_strategy="epoch",
        save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="accuracy",
        max_grad_norm=1.0, seed=args.seed, report_to="none",
    )
    trainer = Trainer(model=model, args=targs, train_dataset=data["train"],
                      eval_dataset=data["validation"], tokenizer=tok, compute_metrics=compute_metrics)
    trainer.train()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
