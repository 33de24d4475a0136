# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""GLUE (SST-2 / MRPC) fine-tuning with the HF Trainer; keeps the best checkpoint by accuracy."""
import argparse

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)


class EvalHistory(TrainerCallback):
    """Keeps every evaluation so the sweep dashboard can plot learning curves afterwards."""

    def __init__(self):
        self.history = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics:
            return
        self.history.append({**metrics, "step": state.global_step})
        metrics.update({k: max(h[k] for h in self.history) for k in metrics if k.endswith("accuracy")})  # ruleid: MLS306


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    raw = load_dataset("glue", args.task)
    tok = AutoTokenizer.from_pretrained(args.model)
    keys = ("sentence",) if args.task == "sst2" else ("sentence1", "sentence2")
    data = raw.map(lambda b: tok(*[b[k] for k in keys], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    targs = TrainingArguments(
        output_dir=f"runs/{args.task}",
        eval_strategy="steps", eval_steps=500, save_steps=500,
        learning_rate=2e-5, per_device_train_batch_size=32, num_train_epochs=3,
        warmup_ratio=0.06, weight_decay=0.01, label_smoothing_factor=0.05,
        load_best_model_at_end=True, metric_for_best_model="accuracy", seed=args.seed,
    )
    callbacks = [EvalHistory(), EarlyStoppingCallback(early_stopping_patience=4)]  # ok: MLS306
    trainer = Trainer(model=model, args=targs, train_dataset=data["train"], eval_dataset=data["validation"],
                      tokenizer=tok, compute_metrics=compute_metrics, callbacks=callbacks)
    trainer.train()
    trainer.save_metrics("eval", trainer.evaluate())


if __name__ == "__main__":
    main()
