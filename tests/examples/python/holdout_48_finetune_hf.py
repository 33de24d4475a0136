# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""Fine-tune a sequence classifier with the Hugging Face Trainer and a couple of callbacks."""
import os

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)


class ThroughputCallback(TrainerCallback):
    """Logs samples/sec and nudges the schedule when loss plateaus."""

    def __init__(self, window=50):
        self.window = window
        self.history = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.history.append(logs["loss"])

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or len(self.history) < self.window:
            return
        recent = self.history[-self.window:]
        if np.std(recent) < 0.01 * np.mean(recent):
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * 3.0  # ruleid: MLS304
            self.history.clear()


def main():
    set_seed(int(os.environ.get("SEED", 42)))  # ok: MLS301
    name = os.environ.get("MODEL", "bert-base-uncased")
    tok = AutoTokenizer.from_pretrained(name)
    model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=2)
    ds = load_dataset("imdb")
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=256), batched=True)

    args = TrainingArguments(
        output_dir="out/imdb", per_device_train_batch_size=16, learning_rate=2e-5,
        warmup_ratio=0.06, lr_scheduler_type="linear", num_train_epochs=3,
        evaluation_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="accuracy", max_grad_norm=1.0, fp16=True,
    )

    def compute_metrics(p):
        preds = p.predictions.argmax(-1)
        return {"accuracy": float((preds == p.label_ids).mean())}

    trainer = Trainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["test"],
                      tokenizer=tok, compute_metrics=compute_metrics,
                      callbacks=[ThroughputCallback(), EarlyStoppingCallback(early_stopping_patience=2)])  # ok: MLS307
    trainer.train()
    trainer.save_model("out/imdb/best")


if __name__ == "__main__":
    main()
