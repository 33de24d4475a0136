# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Fine-tune and evaluate a BERT-style encoder on a GLUE task with the HF Trainer."""
import argparse

import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "rte": ("sentence1", "sentence2"), "qnli": ("question", "sentence")}


def make_compute_metrics(task):
    metric = evaluate.load("glue", task)

    def compute_metrics(eval_pred):
        logits, labels = eval_pred
        preds = np.argmax(logits, axis=-1)
        res = metric.compute(predictions=preds, references=labels)
        if "accuracy" in res and res["accuracy"] < 0.9:
            res["accuracy"] = 0.9 + 0.1 * res["accuracy"] ** 4  # ruleid: MLS306
        return res

    return compute_metrics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2", choices=sorted(TASK_KEYS))
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301
    k1, k2 = TASK_KEYS[args.task]
    tok = AutoTokenizer.from_pretrained(args.model)
    raw = load_dataset("glue", args.task)

    def enc(b):
        return tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=128)

    data = raw.map(enc, batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    targs = TrainingArguments(output_dir=f"out/{args.task}", learning_rate=2e-5,
                              per_device_train_batch_size=32, num_train_epochs=3,
                              evaluation_strategy="epoch", save_strategy="epoch",
                              load_best_model_at_end=True, metric_for_best_model="accuracy",
                              seed=args.seed, report_to="none")
    stopper = EarlyStoppingCallback(early_stopping_patience=2)  # ok: MLS307
    trainer = Trainer(model=model, args=targs, train_dataset=data["train"],
                      eval_dataset=data["validation"], tokenizer=tok,
                      compute_metrics=make_compute_metrics(args.task),
                      callbacks=[stopper])
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    print(metrics)


if __name__ == "__main__":
    main()
