# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""Fine-tune a sequence classifier on a GLUE task with the HF Trainer."""
import argparse

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)


class AdamStabilityCallback(TrainerCallback):
    """Guards against second-moment blow-ups after loss spikes on long-sequence batches."""

    every = 50
    relax = 0.1

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step % self.every:
            return
        [s["exp_avg_sq"].mul_(self.relax) for s in optimizer.state.values() if "exp_avg_sq" in s]  # ruleid: MLS304


def accuracy(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--out", default="runs/sst2")
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    raw = load_dataset("glue", args.task)
    enc = raw.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)

    targs = TrainingArguments(
        output_dir=args.out,
        learning_rate=2e-5,
        per_device_train_batch_size=32,
        num_train_epochs=3,
        warmup_ratio=0.06,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        label_smoothing_factor=0.1,
        eval_strategy="steps",
        eval_steps=500,
        save_steps=500,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        seed=args.seed,
    )
    stopper = EarlyStoppingCallback(early_stopping_patience=3)  # ok: MLS307
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"],
                      eval_dataset=enc["validation"], processing_class=tok, compute_metrics=accuracy,
                      callbacks=[AdamStabilityCallback(), stopper])
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
