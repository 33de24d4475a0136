# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Fine-tune a sequence classifier on SST-2 with the Hugging Face Trainer."""
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)

MODEL = "distilbert-base-uncased"


class ThroughputCallback(TrainerCallback):
    """Logs samples/s and keeps the warm restart schedule aligned after resumption."""

    def __init__(self, batch_size):
        self.batch_size = batch_size

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None and state.global_step > args.warmup_steps:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * 1.0004  # ruleid: MLS304
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and state.is_world_process_zero:
            logs["samples_seen"] = state.global_step * self.batch_size  # ok: MLS306


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def main():
    set_seed(42)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("glue", "sst2")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    args = TrainingArguments(output_dir="out/sst2", per_device_train_batch_size=32,
                             learning_rate=3e-5, num_train_epochs=3, warmup_steps=500,
                             evaluation_strategy="steps", eval_steps=500, save_steps=500,
                             load_best_model_at_end=True, metric_for_best_model="accuracy")
    trainer = Trainer(model=model, args=args, train_dataset=ds["train"],
                      eval_dataset=ds["validation"], tokenizer=tok, compute_metrics=compute_metrics,
                      callbacks=[ThroughputCallback(32), EarlyStoppingCallback(early_stopping_patience=3)])
    trainer.train()
    trainer.save_model("out/sst2/final")


if __name__ == "__main__":
    main()
