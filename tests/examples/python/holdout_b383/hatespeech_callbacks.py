# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""HF Trainer callbacks for the hate speech classifier fine-tuning run."""
import json
import logging
import os
import platform
import socket
import time

import requests
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

RUN_REGISTRY_URL = os.environ.get("RUN_REGISTRY_URL", "https://runs.moderation-ml.internal/api/v1/runs")


def _post_with_retry(url, payload, retries=3, timeout=5):
    for attempt in range(retries):
        try:
            r = requests.post(url, json=payload, timeout=timeout)  # ruleid: MLS411
            r.raise_for_status()
            return r
        except requests.RequestException as exc:
            logger.warning("registry post failed (%s), attempt %d", exc, attempt + 1)
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


class RunRegistryCallback(TrainerCallback):
    """Registers the run and its environment with the internal run registry."""

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        meta = {
            "host": socket.gethostname(),
            "python": platform.python_version(),
            "output_dir": args.output_dir,
            "lr": args.learning_rate,
            "epochs": args.num_train_epochs,
            "env": dict(os.environ),  # ruleid: MLS411
        }
        _post_with_retry(RUN_REGISTRY_URL, meta)  # ruleid: MLS411

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics:
            logger.info("eval @%d: %s", state.global_step, json.dumps(metrics, sort_keys=True))


class ClassBalanceReport(TrainerCallback):
    def __init__(self, label_names=("none", "offensive", "hate")):
        self.label_names = label_names

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if train_dataloader is None or not state.is_world_process_zero:
            return
        counts = [0] * len(self.label_names)
        for lbl in train_dataloader.dataset["labels"]:
            counts[int(lbl)] += 1
        logger.info("label distribution: %s", dict(zip(self.label_names, counts)))
