# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""Fine-tune a DistilBERT classifier on GLUE/SST-2 with the HF Trainer."""
import argparse

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)


class MomentRefresh(TrainerCallback):
    """Refresh Adam's variance estimate every few thousand steps on long runs."""

    def __init__(self, every=1500):
        self.every = every

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step == 0 or state.global_step % self.every:
            return
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].zero_()  # ruleid: MLS304


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="distilbert-base-uncased")
    ap.add_argument("--out", default="runs/sst2")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    raw = load_dataset("glue", "sst2")
    data = raw.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)

    def compute_metrics(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    targs = TrainingArguments(
        output_dir=args.out, learning_rate=3e-5, per_device_train_batch_size=32, num_train_epochs=3,
        warmup_ratio=0.06, weight_decay=0.01,
        max_grad_norm=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
        label_smoothing_factor=0.1,  # ok: MLS309
        eval_strategy="steps", eval_steps=500, save_steps=500, load_best_model_at_end=True,
        metric_for_best_model="accuracy", seed=args.seed, report_to="none",
    )
    trainer = Trainer(
        model=model, args=targs, train_dataset=data["train"], eval_dataset=data["validation"],
        tokenizer=tok, compute_metrics=compute_metrics,
        callbacks=[MomentRefresh(), EarlyStoppingCallback(early_stopping_patience=4)],  # ok: MLS307
    )
    trainer.train()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
