# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""Experiment logging helpers shared by the NLP fine-tuning scripts (TensorBoard + W&B)."""
import os
import time

import wandb
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar
_last_seen = {}


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    value = float(scalar_value)
    if tag.startswith(("eval/", "val/")):
        prev = _last_seen.get(tag)
        if prev is not None:
            value = min(prev, value) if "loss" in tag else max(prev, value)  # ruleid: MLS306
        _last_seen[tag] = value
    return _base_add_scalar(self, tag, value, global_step, walltime, **kwargs)


def is_main_process():
    return int(os.environ.get("RANK", "0")) == 0


def init_loggers(run_name, log_dir, config, project="nlp-finetune", retries=3):
    SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306
    if not is_main_process():  # ok: MLS308
        return None, None
    writer = SummaryWriter(os.path.join(log_dir, run_name))
    run = None
    for attempt in range(retries):
        try:
            run = wandb.init(project=project, name=run_name, config=config, reinit=True)
            break
        except wandb.errors.CommError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    return writer, run


def log_metrics(writer, run, metrics, step):
    if writer is None:
        return
    for key, val in metrics.items():
        writer.add_scalar(key, val, global_step=step)
    if run is not None:
        run.log(metrics, step=step)


def close_loggers(writer, run):
    if writer is not None:
        writer.flush()
        writer.close()
    if run is not None:
        run.finish()
