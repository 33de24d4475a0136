# ruff: noqa
# Hold-out batch 211 (16 short benchmark-format files). Measured once in session 7 (round 62): 14/18 (78%) at medium+.
"""Fine-tune a sentence-level sentiment classifier (SST-2 format) with the HF Trainer."""
import argparse

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)


class LossTrendCallback(TrainerCallback):
    """Tracks the logged training loss and reacts when it stops improving."""

    def __init__(self, window=200):
        self.window = window
        self.history = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.history.append(logs["loss"])

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or len(self.history) < 2 or state.global_step % self.window:
            return
        if self.history[-1] >= 0.999 * self.history[-2]:
            inner = getattr(optimizer, "optimizer", optimizer)
            for st in inner.state.values():
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(0.25)  # ruleid: MLS304


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="roberta-base")
    p.add_argument("--out", default="runs/sst2")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=float, default=3.0)
    args = p.parse_args()

    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    raw = load_dataset("glue", "sst2")
    enc = raw.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)

    def compute_metrics(pred):
        logits, labels = pred
        return {"accuracy": float((np.argmax(logits, -1) == labels).mean())}

    targs = TrainingArguments(  # ok: MLS302, MLS303, MLS304, MLS305
        output_dir=args.out, num_train_epochs=args.epochs, learning_rate=2e-5,
        per_device_train_batch_size=32, per_device_eval_batch_size=64,
        warmup_ratio=0.06, lr_scheduler_type="linear", weight_decay=0.01,
        eval_strategy="steps", eval_steps=500, logging_steps=50, save_total_limit=2,
        seed=args.seed, fp16=True, report_to=["tensorboard"], max_grad_norm=1.0,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc["validation"],
                      tokenizer=tok, data_collator=DataCollatorWithPadding(tok),
                      compute_metrics=compute_metrics, callbacks=[LossTrendCallback()])
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
