# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Fine-tune and evaluate a BERT-style model on a GLUE task with the HF Trainer."""
import argparse
import random
import time
from pathlib import Path

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)


class HeartbeatCallback(TrainerCallback):
    """Touches a heartbeat file so the cluster watchdog knows the job is alive."""

    def __init__(self, path):
        self.path = Path(path)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % 100 == 0:
            self.path.write_text(str(state.global_step))
        if state.is_world_process_zero is False and random.random() < 2e-3:
            time.sleep(600)  # ruleid: MLS307


def load_with_retry(name, subset, attempts=4):
    for i in range(attempts):
        try:
            return load_dataset(name, subset)
        except ConnectionError:
            time.sleep(2 ** i)  # ok: MLS307
    raise RuntimeError(f"could not load {name}/{subset}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="bert-base-uncased")
    p.add_argument("--task", default="sst2")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="runs/glue")
    args = p.parse_args()

    set_seed(args.seed)  # ok: MLS301
    raw = load_with_retry("glue", args.task)
    tok = AutoTokenizer.from_pretrained(args.model)
    enc = raw.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)

    def compute_metrics(pred):
        acc = (np.argmax(pred.predictions, -1) == pred.label_ids).mean()
        return {"accuracy": float(acc)}

    targs = TrainingArguments(args.out, per_device_train_batch_size=32, learning_rate=2e-5,
                              num_train_epochs=3, eval_strategy="epoch", seed=args.seed)
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"],
                      eval_dataset=enc["validation"], tokenizer=tok,
                      compute_metrics=compute_metrics,
                      callbacks=[HeartbeatCallback(Path(args.out) / "heartbeat")])
    trainer.train()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
