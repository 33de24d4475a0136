# ruff: noqa
# Hold-out batch 475 (16 short files, mixed domains). Measured once in session 20 (round 128): 12/17 (71%) at medium+.
"""Trainer callbacks for the review summarisation run (BART/PEGASUS fine-tuning)."""
import logging
import os
import platform
import time

import requests
from transformers import TrainerCallback

logger = logging.getLogger(__name__)
STATUS_URL = os.environ.get("RUN_STATUS_URL", "https://status.reviewsumm-ml.io/api/v1/runs")


class RunStatusCallback(TrainerCallback):
    """Pushes a heartbeat to the team dashboard so stalled jobs are noticed."""

    def __init__(self, run_name, max_retries=3):
        self.run_name = run_name
        self.max_retries = max_retries

    def _post(self, payload):
        for attempt in range(self.max_retries):
            try:
                r = requests.post(STATUS_URL, json=payload, timeout=5)
                if r.status_code != 429:
                    return
            except requests.RequestException as exc:
                logger.debug("status post failed: %s", exc)
            time.sleep(2 ** attempt)  # ok: MLS307

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._post({  # ruleid: MLS411
            "run": self.run_name,
            "event": "start",
            "host": platform.node(),
            "output_dir": args.output_dir,
            "env": {k: v for k, v in os.environ.items() if k.isupper()},  # ruleid: MLS411
        })

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self._post({"run": self.run_name, "event": "log", "step": state.global_step,
                        "rougeL": logs.get("eval_rougeL"), "loss": logs.get("loss")})
