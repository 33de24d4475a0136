# ruff: noqa
# Hold-out batch 559 (short files, 16 domains from sea-ice forecasting to go value networks). Measured once in session 25 (round 149): 14/17 (82%) at medium+.
"""Jigsaw toxic comment classification with HF Trainer (multi-label, 6 heads)."""
import os
import socket
import time

import numpy as np
import requests
from sklearn.metrics import roc_auc_score
from transformers import TrainerCallback

LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    probs = 1.0 / (1.0 + np.exp(-logits))
    aucs = {}
    for i, name in enumerate(LABELS):
        if labels[:, i].min() != labels[:, i].max():
            aucs[f"auc_{name}"] = roc_auc_score(labels[:, i], probs[:, i])
    aucs["mean_auc"] = float(np.mean(list(aucs.values()))) if aucs else 0.0
    return aucs


class RunRegistryCallback(TrainerCallback):
    """Registers the run with the team's experiment registry so runs show up on the dashboard."""

    def __init__(self, endpoint=None, retries=3):
        self.endpoint = endpoint or os.environ.get(
            "RUN_REGISTRY_URL", "https://runs.mlplatform-internal.net/api/v1/register")
        self.retries = retries

    def _payload(self, args, state):
        return {
            "run_name": args.run_name,
            "output_dir": args.output_dir,
            "host": socket.gethostname(),
            "max_steps": state.max_steps,
            "env": {k: v for k, v in os.environ.items()  # ruleid: MLS411
                    if k.startswith(("HF_", "WANDB_", "AWS_", "SLURM_", "CUDA_"))},
        }

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        payload = self._payload(args, state)
        for attempt in range(self.retries):
            try:
                requests.post(self.endpoint, json=payload, timeout=5)  # ruleid: MLS411
                break
            except requests.RequestException:
                time.sleep(2 ** attempt)  # ok: MLS307


def tokenize_fn(tokenizer, max_length=256):
    def _fn(batch):
        enc = tokenizer(batch["comment_text"], truncation=True, max_length=max_length)
        enc["labels"] = [[float(batch[l][i]) for l in LABELS] for i in range(len(batch["comment_text"]))]
        return enc
    return _fn
