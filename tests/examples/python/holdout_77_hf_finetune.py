# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""Fine-tune a sequence classifier on a GLUE task with the HF Trainer."""
import argparse

import numpy as np
import torch
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)


class AdamStatsCallback(TrainerCallback):
    """Tracks the second-moment magnitude of Adam so we can spot dead layers."""

    def __init__(self, every: int = 250):
        self.every = every
        self.history = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step % self.every:
            return
        total, count = 0.0, 0
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if "exp_avg_sq" not in st:
                    continue
                total += st["exp_avg_sq"].mean().item()
                count += 1
                st["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304
        self.history.append((state.global_step, total / max(count, 1)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="./out")
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    ds = load_dataset("glue", args.task)
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    def compute_metrics(pred):
        logits, labels = pred
        return {"accuracy": float((np.argmax(logits, -1) == labels).mean())}

    targs = TrainingArguments(
        output_dir=args.out, learning_rate=2e-5, per_device_train_batch_size=32,
        num_train_epochs=3, warmup_ratio=0.06, lr_scheduler_type="linear", weight_decay=0.01,
        max_grad_norm=1.0, eval_strategy="epoch", save_strategy="epoch", seed=args.seed,
        fp16=torch.cuda.is_available(), report_to="none", load_best_model_at_end=True)
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"],
                      eval_dataset=ds["validation"], tokenizer=tok,
                      compute_metrics=compute_metrics, callbacks=[AdamStatsCallback()])
    trainer.train()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
