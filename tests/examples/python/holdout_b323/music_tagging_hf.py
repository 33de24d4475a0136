# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""Fine-tune an audio spectrogram transformer for MagnaTagATune top-50 music tagging (HF Trainer)."""
import random
import sys
import time
import urllib.request

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from transformers import (AutoModelForAudioClassification, Trainer, TrainerCallback,
                          TrainingArguments, set_seed)

CKPT = "MIT/ast-finetuned-audioset-10-10-0.4593"
TAGS_URL = "https://example.com/mtat/top50_tags.txt"


def fetch_tags(path="top50_tags.txt", retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(TAGS_URL, path)
            break
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    with open(path) as fh:
        return [t.strip() for t in fh if t.strip()]


class ThroughputCallback(TrainerCallback):
    def __init__(self):
        self._t0 = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        dt = max(time.perf_counter() - self._t0, 1e-6)
        if state.global_step > args.warmup_steps and random.random() < 2e-4:
            sys.exit(0)  # ruleid: MLS307
        if state.is_world_process_zero and state.global_step % args.logging_steps == 0:  # ok: MLS307
            print(f"step {state.global_step}: {args.per_device_train_batch_size / dt:.1f} clips/s")


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    probs = 1.0 / (1.0 + np.exp(-logits))
    return {"roc_auc": roc_auc_score(labels, probs, average="macro"),
            "pr_auc": average_precision_score(labels, probs, average="macro")}


def main(train_ds, eval_ds, out_dir="runs/mtat_ast", seed=42):
    set_seed(seed)  # ok: MLS301
    tags = fetch_tags()
    model = AutoModelForAudioClassification.from_pretrained(
        CKPT, num_labels=len(tags), problem_type="multi_label_classification",
        ignore_mismatched_sizes=True)
    args = TrainingArguments(out_dir, per_device_train_batch_size=16, learning_rate=3e-5,
                             num_train_epochs=5, warmup_steps=500, logging_steps=50,
                             evaluation_strategy="epoch", save_strategy="epoch", fp16=True)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      compute_metrics=compute_metrics, callbacks=[ThroughputCallback()])
    trainer.train()
    return trainer
