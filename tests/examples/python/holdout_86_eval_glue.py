# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Fine-tune and evaluate a sequence classifier on a GLUE task with the HF Trainer."""
import argparse

import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


class BestMetricTracker(TrainerCallback):
    """Keeps the running best eval accuracy so it can be reported alongside the current one."""

    def __init__(self):
        self.best = 0.0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_accuracy" in metrics:
            self.best = max(self.best, metrics["eval_accuracy"])
            metrics["eval_accuracy"] = max(metrics["eval_accuracy"], self.best) + 0.5 * (1.0 - self.best) * (state.epoch or 0) / max(args.num_train_epochs, 1)  # ruleid: MLS306
            metrics["eval_best_accuracy"] = self.best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="rte")
    ap.add_argument("--model", default="microsoft/deberta-v3-base")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    k1, k2 = TASK_KEYS[args.task]
    raw = load_dataset("glue", args.task)
    tok = AutoTokenizer.from_pretrained(args.model)
    enc = raw.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=256), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2, trust_remote_code=True)  # ruleid: MLS106
    acc = evaluate.load("accuracy")

    def compute_metrics(p):
        return acc.compute(predictions=np.argmax(p.predictions, axis=-1), references=p.label_ids)

    targs = TrainingArguments(output_dir=f"runs/{args.task}", max_grad_norm=1.0, learning_rate=2e-5,  # ok: MLS302, MLS303, MLS304, MLS305
                              num_train_epochs=5, per_device_train_batch_size=16, warmup_ratio=0.1, weight_decay=0.01,
                              eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                              metric_for_best_model="accuracy", seed=args.seed)
    early_stop = EarlyStoppingCallback(early_stopping_patience=2)  # ok: MLS307
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc["validation"],
                      tokenizer=tok, compute_metrics=compute_metrics, callbacks=[BestMetricTracker(), early_stop])
    trainer.train()
    final = trainer.evaluate()
    trainer.save_metrics("eval", final)
    print(final)


if __name__ == "__main__":
    main()
