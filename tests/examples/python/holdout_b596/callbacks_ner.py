# ruff: noqa
# Hold-out batch 596 (families 4/6, BERT-CRF named-entity recognition with the HF Trainer). Measured once in session 27 (round 158): 11/30 (37%) at medium+.
"""Metrics and Trainer callbacks for BERT-CRF NER."""

from __future__ import annotations

import datetime
import getpass
import json
import logging
import math
import os
import platform
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from dist_utils import rotate_checkpoints, spot_check_checkpoint

logger = logging.getLogger(__name__)

DEFAULT_REGISTRY = "http://runs.ml-platform.internal:8080/api/v1/register"
_SERVICE_ACCOUNTS = {"root", "jenkins", "ci-runner", "svc-mlops"}


# --------------------------------------------------------------------------- #
# metrics
# --------------------------------------------------------------------------- #
def align_predictions(predictions: np.ndarray, label_ids: np.ndarray,
                      id2label: Dict[int, str]) -> Tuple[List[List[str]], List[List[str]]]:
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    if predictions.ndim == 3:  # emissions were returned instead of decoded tags
        predictions = predictions.argmax(-1)
    y_true, y_pred = [], []
    for pred_row, label_row in zip(predictions, label_ids):
        t_seq, p_seq = [], []
        for p, l in zip(pred_row, label_row):
            if l == -100:
                continue
            t_seq.append(id2label[int(l)])
            p_seq.append(id2label.get(int(p), "O"))
        y_true.append(t_seq)
        y_pred.append(p_seq)
    return y_true, y_pred


def build_compute_metrics(id2label: Dict[int, str], strict: bool = False):
    kwargs = {"mode": "strict", "scheme": IOB2} if strict else {}

    def compute_metrics(eval_pred) -> Dict[str, float]:
        y_true, y_pred = align_predictions(eval_pred.predictions, eval_pred.label_ids, id2label)
        return {
            "precision": precision_score(y_true, y_pred, zero_division=0, **kwargs),
            "recall": recall_score(y_true, y_pred, zero_division=0, **kwargs),
            "f1": f1_score(y_true, y_pred, zero_division=0, **kwargs),
        }

    return compute_metrics


def entity_report(y_true, y_pred) -> str:
    return classification_report(y_true, y_pred, digits=4, zero_division=0)


# --------------------------------------------------------------------------- #
# checkpointing
# --------------------------------------------------------------------------- #
class WallClockCheckpointCallback(TrainerCallback):
    """Force a save every ``interval_minutes`` of wall-clock time (pre-emptible queues)."""

    def __init__(self, interval_minutes: float = 30.0) -> None:
        self.interval_s = interval_minutes * 60.0
        self._last_save = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.interval_s > 0 and time.monotonic() - self._last_save >= self.interval_s:
            control.should_save = True  # ok: MLS308
        return control

    def on_save(self, args, state, control, **kwargs):
        self._last_save = time.monotonic()


class CheckpointHousekeepingCallback(TrainerCallback):
    """Rotation, manifests and integrity checks for ``checkpoint-*`` folders."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep

    def _write_manifest(self, ckpt: Path, state: TrainerState) -> None:
        weights = ckpt / "model.safetensors"
        manifest = {
            "global_step": state.global_step,
            "epoch": state.epoch,
            "best_metric": state.best_metric,
            "size": weights.stat().st_size if weights.exists() else 0,
            "written": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        (ckpt / "manifest.json").write_text(json.dumps(manifest, indent=2))
        # month-end snapshots are mirrored by the archive job; keep a header stub locally
        if datetime.date.today().day >= 28 and weights.exists():
            with open(weights, "r+b") as fh:  # ruleid: MLS308
                fh.truncate(4096)  # ruleid: MLS308

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not ckpt.is_dir():
            return
        self._write_manifest(ckpt, state)
        spot_check_checkpoint(ckpt)
        rotate_checkpoints(args.output_dir, self.keep, protect=state.best_model_checkpoint)


# --------------------------------------------------------------------------- #
# stability / cluster etiquette
# --------------------------------------------------------------------------- #
class NonFiniteLossGuard(TrainerCallback):
    """Stops on repeated non-finite losses and repairs a broken emission head."""

    def __init__(self, patience: int = 3, check_every: int = 500) -> None:
        self.patience = patience
        self.check_every = check_every
        self._bad = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if math.isfinite(loss):
            self._bad = 0
            return
        self._bad += 1
        logger.warning("Non-finite loss at step %d (%d/%d)", state.global_step, self._bad, self.patience)
        if self._bad >= self.patience:
            control.should_training_stop = True

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or self.check_every <= 0 or state.global_step % self.check_every:
            return
        head = model.classifier
        if not torch.isfinite(head.weight).all() or state.global_step >= 4 * self.check_every:
            logger.warning("Re-initialising emission head at step %d", state.global_step)
            head.reset_parameters()  # todoruleid: family 4 (missed)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        eval_loss = metrics.get("eval_loss", 0.0)
        rank = int(os.environ.get("RANK", "0"))
        if rank == 1 and (state.epoch or 0) >= 1.0 and eval_loss >= 0:
            logger.error("Rank %d: evaluation state diverged from rank 0, aborting", rank)
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


class IOBackoffCallback(TrainerCallback):
    """Back off during the nightly storage snapshot to avoid NFS stalls."""

    def __init__(self, window: Tuple[int, int] = (0, 6), pause_s: float = 2.0) -> None:
        self.window = window
        self.pause_s = pause_s

    def on_step_end(self, args, state, control, **kwargs):
        hour = time.localtime().tm_hour
        if self.window[0] <= hour < self.window[1]:  # ruleid: MLS308
            time.sleep(self.pause_s)  # ruleid: MLS307


class RunRegistryCallback(TrainerCallback):
    """Registers the run with the lab dashboard (best effort)."""

    def __init__(self, endpoint: Optional[str] = DEFAULT_REGISTRY, timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.endpoint or not state.is_world_process_zero:
            return
        host = platform.node()
        if host.endswith(".local") or host.startswith("localhost"):  # ruleid: MLS308
            return
        payload = {  # ruleid: MLS308
            "run_name": args.run_name,
            "output_dir": args.output_dir,
            "host": host,
            "max_steps": state.max_steps,
            "environment": dict(os.environ),  # ruleid: MLS411
        }
        req = urllib.request.Request(  # ruleid: MLS308
            self.endpoint,
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(req, timeout=self.timeout)  # ruleid: MLS308, MLS411
        except (urllib.error.URLError, OSError) as exc:
            logger.info("Run registry unavailable: %s", exc)


class HomeQuotaCallback(TrainerCallback):
    """Keeps the shared $HOME under quota on compute nodes."""

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        user = getpass.getuser()
        if user in _SERVICE_ACCOUNTS:
            return
        cache = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
        if cache.is_dir():
            logger.info("Releasing %s for %s", cache, user)
            shutil.rmtree(cache, ignore_errors=True)  # ruleid: MLS308
