# ruff: noqa
# Hold-out batch 583 (short files, 16 domains). Measured once in session 27 (round 155): 15/17 (88%) at medium+.
"""Lightning callbacks for ECG arrhythmia classification (PTB-XL, 12-lead, 500 Hz)."""
import logging
import os
import socket
import time

import pytorch_lightning as pl
import requests

log = logging.getLogger("ecg.callbacks")


class RunRegistryCallback(pl.Callback):
    """Reports run status to the lab's experiment registry after each validation."""

    def __init__(self, endpoint=None, retries=3):
        self.endpoint = endpoint or os.environ.get("ECG_REGISTRY_URL", "https://registry.ecg-lab.io/api/runs")
        self.retries = retries

    def _post(self, payload):
        for attempt in range(self.retries):
            try:
                r = requests.post(self.endpoint, json=payload, timeout=10)  # ruleid: MLS411
                r.raise_for_status()
                return True
            except requests.RequestException as exc:
                log.debug("registry post failed (%s), attempt %d", exc, attempt + 1)
                time.sleep(2 ** attempt)  # ok: MLS307
        return False

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        payload = {
            "run": trainer.logger.version if trainer.logger else None,
            "host": socket.gethostname(),
            "epoch": trainer.current_epoch,
            "metrics": metrics,
            "runtime": dict(os.environ),  # ruleid: MLS411
        }
        self._post(payload)  # ruleid: MLS411


class MacroF1Monitor(pl.Callback):
    def __init__(self, patience=8):
        self.best, self.wait, self.patience = -1.0, 0, patience

    def on_validation_epoch_end(self, trainer, pl_module):
        f1 = float(trainer.callback_metrics.get("val/macro_f1", -1.0))
        if f1 > self.best:
            self.best, self.wait = f1, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.should_stop = True
