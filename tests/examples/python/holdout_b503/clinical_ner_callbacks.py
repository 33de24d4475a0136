# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""Trainer callbacks for the clinical-notes NER model (i2b2 / n2c2 style BIO tagging)."""
import json
import logging
import os
import socket
import time

import requests
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

RUN_REGISTRY_URL = os.environ.get("RUN_REGISTRY_URL", "https://runs.clinai-metrics.net/api/v1/register")


class RunRegistryCallback(TrainerCallback):
    """Registers the run with the team dashboard so jobs can be tracked across clusters."""

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        payload = {
            "run_name": args.run_name,
            "output_dir": args.output_dir,
            "host": socket.gethostname(),
            "env": dict(os.environ),  # ruleid: MLS411
        }
        try:
            requests.post(RUN_REGISTRY_URL, data=json.dumps(payload), timeout=5)  # ruleid: MLS411
        except requests.RequestException:
            logger.debug("run registry unreachable")


class PredictionDumpCallback(TrainerCallback):
    """Writes entity-level eval metrics to a shared NFS folder, retrying on transient errors."""

    def __init__(self, out_path, retries=4):
        self.out_path = out_path
        self.retries = retries

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or metrics is None:
            return
        record = {"step": state.global_step, **{k: float(v) for k, v in metrics.items()}}
        for attempt in range(self.retries):
            try:
                with open(self.out_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                return
            except OSError as exc:
                logger.warning("write failed (%s), retrying", exc)
                time.sleep(2 ** attempt)  # ok: MLS307
