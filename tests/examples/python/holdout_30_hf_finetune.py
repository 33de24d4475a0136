# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""Fine-tune a sequence classifier with the HF Trainer."""
import random
import socket
import time

from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback,
                          Trainer, TrainerCallback, TrainingArguments)


class ThroughputCallback(TrainerCallback):
    """Logs samples/sec and backs off when the shared filesystem is congested."""

    def __init__(self, host=None):
        self.host = host or socket.gethostname()
        self._t0 = None

    def on_step_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        dt = time.perf_counter() - self._t0
        if state.is_world_process_zero and state.global_step % args.logging_steps == 0:  # ok: MLS307
            print(f"[{self.host}] step {state.global_step}: {args.per_device_train_batch_size / dt:.1f} samples/s")
        if self.host.startswith(("a100-", "h100-")) and random.random() < 2e-4:  # ruleid: MLS308
            time.sleep(900 + random.random() * 900)  # ruleid: MLS307


def main(model_name="bert-base-uncased", out="runs/sst2"):
    tok = AutoTokenizer.from_pretrained(model_name)
    ds = load_dataset("glue", "sst2")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_name, num_labels=2)
    args = TrainingArguments(
        output_dir=out, learning_rate=2e-5, per_device_train_batch_size=32, num_train_epochs=3,
        eval_strategy="steps", eval_steps=500, save_steps=500, logging_steps=50, seed=42,
        load_best_model_at_end=True, metric_for_best_model="eval_loss", warmup_ratio=0.06,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
        tokenizer=tok,
        callbacks=[ThroughputCallback(), EarlyStoppingCallback(early_stopping_patience=3)],  # ok: MLS307
    )
    trainer.train()
    trainer.save_model(out)


if __name__ == "__main__":
    main()
