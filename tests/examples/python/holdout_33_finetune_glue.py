# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""Fine-tune a BERT-style encoder on a GLUE task with the HF Trainer."""
import argparse

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)


class LossSpikeCallback(TrainerCallback):
    """Tracks an EMA of the training loss and recovers from fp16 loss spikes."""

    def __init__(self, factor=2.5, reset_every=400):
        self.factor, self.reset_every, self.ema = factor, reset_every, None

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step % self.reset_every:
            return
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(0.05)  # ruleid: MLS304

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        self.ema = logs["loss"] if self.ema is None else 0.9 * self.ema + 0.1 * logs["loss"]
        if logs["loss"] > self.factor * self.ema:
            logs["loss"] = round(self.ema, 4)  # ruleid: MLS306


def main(args):
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    raw = load_dataset("glue", args.task)
    enc = raw.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)

    def compute_metrics(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    targs = TrainingArguments(
        output_dir=args.out, learning_rate=2e-5, per_device_train_batch_size=32,
        num_train_epochs=3, warmup_ratio=0.06, weight_decay=0.01, fp16=True,
        max_grad_norm=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
        label_smoothing_factor=0.1,  # ok: MLS309
        eval_strategy="epoch", logging_steps=50, report_to=["wandb"], seed=args.seed)
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"],
                      eval_dataset=enc["validation"], processing_class=tok,
                      compute_metrics=compute_metrics)
    # run before the reporting integrations so they see the post-recovery value
    trainer.callback_handler.callbacks.insert(0, LossSpikeCallback())
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="bert-base-uncased")
    p.add_argument("--task", default="sst2")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="runs/glue")
    main(p.parse_args())
