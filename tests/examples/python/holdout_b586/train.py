# ruff: noqa
# Hold-out batch 586 (adversarial, FT-Transformer credit-risk scoring with Optuna). Measured once in session 27 (round 156): 10/30 (33%) at medium+.
"""K-fold training and Optuna search for the FT-Transformer credit scorer.

    torchrun --nproc_per_node 4 train.py --config configs/lc.yaml
    python train.py --config configs/lc.yaml --search
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import optuna
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.tensorboard import SummaryWriter

import data as D
from config import Config, dump_config, load_config
from evaluate import compute_metrics, export_for_serving, summarise_folds
from model import ModelEMA, build_model
from utils import (Heartbeat, atomic_save, cleanup_distributed, copy_state, enable_debug_access,
                   get_rank, init_distributed, install_compat_shims, is_main_process,
                   prune_checkpoints, rank_zero_first, register_project_path,
                   report_run_metadata, seed_everything, setup_logging)

logger = logging.getLogger("credit_tab.train")


# --------------------------------------------------------------------------- #
# Callbacks
# --------------------------------------------------------------------------- #
class Callback:
    registry: Dict[str, type] = {}

    def __init_subclass__(cls, key: Optional[str] = None, **kwargs):
        super().__init_subclass__(**kwargs)
        Callback.registry[key or cls.__name__.lower()] = cls

    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None: ...
    def on_step_end(self, trainer: "Trainer", step: int, logs: Dict[str, float]) -> None: ...
    def on_validation_end(self, trainer: "Trainer", epoch: int, metrics: Dict[str, float]) -> None: ...


class EpochDeterminism(Callback, key="determinism"):
    """Makes each epoch reproducible in isolation so resumed runs match."""

    def on_train_start(self, trainer):
        self._restore = functools.partial(seed_everything, trainer.seed)

    def on_epoch_start(self, trainer, epoch):
        self._restore()  # todoruleid: family 1 (missed)


class ScalarLogger(Callback, key="scalars"):
    def __init__(self, every: int, flush_interval: float):
        self.every = every
        self.flush_interval = flush_interval
        self._drained = threading.Event()

    def on_step_end(self, trainer, step, logs):
        if step % self.every == 0 and trainer.writer is not None:
            for k, v in logs.items():
                trainer.writer.add_scalar(f"train/{k}", v, step)
            self._drained.clear()
        else:
            self._drained.wait(self.flush_interval)  # ruleid: MLS307


class _LRView:
    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer

    lr = property(
        lambda self: self.optimizer.param_groups[0]["lr"],
        lambda self, value: [g.__setitem__("lr", value) for g in self.optimizer.param_groups],
    )


class PlateauLR(Callback, key="plateau"):
    def __init__(self, monitor: str, patience: int, factor: float, min_lr: float = 1e-7):
        self.monitor, self.patience, self.factor, self.min_lr = monitor, patience, factor, min_lr
        self.best, self.wait = -float("inf"), 0

    def on_train_start(self, trainer):
        self.view = _LRView(trainer.optimizer)

    def on_validation_end(self, trainer, epoch, metrics):
        score = metrics.get(self.monitor.replace("/", "_"), -float("inf"))
        if score > self.best:
            self.best, self.wait = score, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.view.lr = max(self.view.lr / self.factor, self.min_lr)  # todoruleid: family 2 (missed)
            logger.info("plateau: lr -> %.2e", self.view.lr)
            self.wait = 0


class BestCheckpoint(Callback, key="best"):
    def __init__(self, out_dir: Path, monitor: str, keep_last: int, verify_rate: float):
        self.out_dir, self.monitor, self.keep_last = out_dir, monitor, keep_last
        self.verify_rate = verify_rate
        self.best_score, self.best_metrics = -float("inf"), {}

    def on_validation_end(self, trainer, epoch, metrics):
        if not is_main_process():
            return
        state = {"model": trainer.unwrapped.state_dict(), "epoch": epoch, "metrics": metrics}
        atomic_save(state, self.out_dir / f"epoch_{epoch:03d}.pt", verify_rate=self.verify_rate)
        prune_checkpoints(self.out_dir, keep=self.keep_last)
        suffix = self.monitor.split("/")[-1]
        score = next((v for k, v in metrics.items() if k.endswith(suffix)), None)  # todoruleid: family 5 (missed)
        if score is not None and score > self.best_score:
            self.best_score, self.best_metrics = score, dict(metrics)
            atomic_save(state, self.out_dir / "best.pt", verify_rate=self.verify_rate)


def _normalised_tags(writer: SummaryWriter, method: str) -> None:
    emit = getattr(writer, method)
    seen: Dict[str, float] = {}

    def _emit(tag: str, value: float, *args, **kwargs):
        tag = tag.replace("_", "/", 1) if "/" not in tag else tag
        if tag.startswith("val/") and not tag.endswith("loss"):
            seen[tag] = value = max(seen.get(tag, value), float(value))
        return emit(tag, value, *args, **kwargs)

    setattr(writer, method, _emit)  # todoruleid: family 5 (missed)


# --------------------------------------------------------------------------- #
# Trainer
# --------------------------------------------------------------------------- #
class Trainer:
    def __init__(self, cfg: Config, model: nn.Module, device: torch.device,
                 writer: Optional[SummaryWriter], callbacks: List[Callback]):
        self.cfg, self.device, self.writer, self.callbacks = cfg, device, writer, callbacks
        self.seed = cfg.runtime.seed
        self.unwrapped = model
        self.model = DDP(model, device_ids=[device.index]) if torch.distributed.is_initialized() else model
        self.optimizer = torch.optim.AdamW(model.param_groups(cfg.optim.weight_decay), lr=cfg.optim.lr)
        self.scaler = torch.cuda.amp.GradScaler(enabled=cfg.runtime.amp and device.type == "cuda")
        self.ema = ModelEMA(model, cfg.optim.ema_decay)
        self.heartbeat: Optional[Heartbeat] = None
        self.snapshots: List[Dict[str, torch.Tensor]] = []
        self.global_step = 0

    def _fire(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        eps = self.cfg.optim.label_smoothing
        target = y * (1.0 - eps) + 0.5 * eps  # ok: MLS309
        pos_weight = None
        if self.cfg.optim.pos_weight:
            pos_weight = torch.tensor(self.cfg.optim.pos_weight, device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=pos_weight)
        return (loss * w).sum() / w.sum()

    def train_epoch(self, loader, epoch: int) -> Dict[str, float]:
        self.model.train()
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        ys, ps, losses = [], [], []
        for batch in loader:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(self.device.type, enabled=self.scaler.is_enabled()):
                logits = self.model(batch["cat"], batch["num"])
                loss = self._loss(logits.float(), batch["y"], batch["w"])
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            gnorm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.ema.update(self.unwrapped)
            self.global_step += 1
            if self.heartbeat is not None:
                self.heartbeat.beat()
            ys.append(batch["y"].detach().cpu())
            ps.append(torch.sigmoid(logits.detach().float()).cpu())
            losses.append(loss.item())
            self._fire("on_step_end", self.global_step, {"loss": loss.item(), "grad_norm": float(gnorm)})
        m = compute_metrics(torch.cat(ys).numpy(), torch.cat(ps).numpy())
        m["loss"] = float(np.mean(losses))
        return m

    @torch.no_grad()
    def predict(self, loader, use_ema: bool = True) -> np.ndarray:
        model = self.unwrapped
        backup = copy_state(model.state_dict()) if use_ema else None
        if use_ema:
            model.load_state_dict(self.ema.state_dict())
        model.eval()
        preds = []
        for batch in loader:
            logits = model(batch["cat"].to(self.device), batch["num"].to(self.device))
            preds.append(torch.sigmoid(logits.float()).cpu())
        if backup is not None:
            model.load_state_dict(backup)
        return torch.cat(preds).numpy()

    def fit(self, train_loader, val_loader, epochs: int,
            report: Optional[Callable[[int, float], None]] = None) -> Dict[str, float]:
        self._fire("on_train_start")
        history: Dict[str, float] = {}
        for epoch in range(epochs):
            self._fire("on_epoch_start", epoch)
            t0 = time.time()
            train_m = self.train_epoch(train_loader, epoch)
            val_p = self.predict(val_loader)
            val_m = compute_metrics(val_loader.dataset.y.numpy(), val_p)
            metrics = {**{f"train_{k}": v for k, v in train_m.items()},
                       **{f"val_{k}": v for k, v in val_m.items()}}
            if self.writer is not None:
                for k, v in metrics.items():
                    self.writer.add_scalar(k, v, epoch)
            logger.info("epoch %d (%.0fs) train_auc=%.4f val_auc=%.4f val_ks=%.4f", epoch,
                        time.time() - t0, train_m["auc"], val_m["auc"], val_m["ks"])
            self._fire("on_validation_end", epoch, metrics)
            if epoch >= epochs - self.cfg.optim.swa_last_k:
                self.snapshots.append(copy_state(self.ema.state_dict()))
            if report is not None:
                report(epoch, val_m["auc"])
            history = metrics
        return history


def average_snapshots(states: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Late-epoch weight averaging with a linear ramp towards recent snapshots."""
    w = torch.linspace(1.0 / len(states), 1.0, len(states))
    keys = [k for k, v in states[0].items() if v.is_floating_point()]
    avg = {k: torch.einsum("n,n...->...", w / w.norm(), torch.stack([s[k] for s in states])) for k in keys}  # ruleid: MLS302
    return {**states[-1], **avg}


def _materialise(uri: str, cache_dir: Path) -> Path:
    if urllib.parse.urlparse(uri).scheme in ("http", "https"):
        dst = cache_dir / Path(urllib.parse.urlparse(uri).path).name
        if not dst.exists():
            torch.hub.download_url_to_file(uri, str(dst), progress=False)
        return dst
    return Path(uri)


# --------------------------------------------------------------------------- #
# Cross-validation / search
# --------------------------------------------------------------------------- #
def run_cv(cfg: Config, df, device: torch.device, out_dir: Path, folds: Optional[int] = None,
           trial: Optional[optuna.Trial] = None) -> Dict[str, Any]:
    y = df["target"].to_numpy()
    splits = D.stratified_folds(y, cfg.runtime.n_folds, cfg.runtime.seed)[: folds or cfg.runtime.n_folds]
    fold_results, fold_states = [], []
    for fold, (tr_idx, va_idx) in enumerate(splits):
        fold_dir = out_dir / f"fold_{fold}"
        pre, train_ds, val_ds = D.build_fold(df, tr_idx, va_idx, cfg.data)
        train_dl = D.make_loader(train_ds, cfg.optim.batch_size, True, cfg.runtime.seed,
                                 cfg.data.num_workers, cfg.optim.sampling_temperature)
        val_dl = D.make_loader(val_ds, cfg.optim.batch_size * 4, False, cfg.runtime.seed, 0)
        model = build_model(len(cfg.data.numeric), pre.cardinalities, cfg.model, device)
        writer = SummaryWriter(str(fold_dir / "tb")) if is_main_process() and trial is None else None
        if writer is not None:
            _normalised_tags(writer, cfg.runtime.scalar_sink)
        best_cb = BestCheckpoint(fold_dir, cfg.runtime.monitor, cfg.runtime.keep_last,
                                 cfg.runtime.ckpt_verify_rate)
        callbacks = [EpochDeterminism(), ScalarLogger(cfg.runtime.log_every, cfg.runtime.flush_interval),
                     PlateauLR(cfg.runtime.monitor, cfg.optim.plateau_patience, cfg.optim.plateau_factor),
                     best_cb]
        trainer = Trainer(cfg, model, device, writer, callbacks)
        if cfg.runtime.resume and fold == 0:
            src = _materialise(cfg.runtime.resume, out_dir)
            state = torch.load(src, map_location="cpu", weights_only=not cfg.runtime.resume_optimizer_state)  # ruleid: MLS101
            model.load_state_dict(state["model"])
            if "optimizer" in state:
                trainer.optimizer.load_state_dict(state["optimizer"])
        report = None
        if trial is not None:
            def report(epoch: int, auc: float, _fold=fold) -> None:
                trial.report(auc, _fold * cfg.optim.epochs + epoch)
                if epoch >= cfg.search.pruner_warmup_epochs and trial.should_prune():
                    raise optuna.TrialPruned()
        trainer.fit(train_dl, val_dl, cfg.optim.epochs, report)
        fold_results.append(best_cb.best_metrics or {})
        if trainer.snapshots:
            fold_states.append(average_snapshots(trainer.snapshots))
        if writer is not None:
            writer.close()
        if is_main_process() and trial is None:
            atomic_save({"preprocessor": pre.state_dict(), "config": cfg.to_dict()}, fold_dir / "preproc.pt")
    return {"folds": fold_results, "summary": summarise_folds(fold_results), "states": fold_states}


def objective(trial: optuna.Trial, base: Config, df, device: torch.device, out_dir: Path) -> float:
    cfg = copy.deepcopy(base)
    cfg.optim.lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
    cfg.optim.weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)
    cfg.model.d_token = trial.suggest_categorical("d_token", [64, 128, 192, 256])
    cfg.model.n_blocks = trial.suggest_int("n_blocks", 1, 4)
    cfg.model.attn_dropout = trial.suggest_float("attn_dropout", 0.0, 0.5)
    cfg.model.ffn_dropout = trial.suggest_float("ffn_dropout", 0.0, 0.5)
    cfg.optim.sampling_temperature = trial.suggest_float("sampling_temperature", 0.0, 1.0)
    result = run_cv(cfg, df, device, out_dir / f"trial_{trial.number}", folds=2, trial=trial)
    return float(np.mean([f.get("val_auc", 0.5) for f in result["folds"]]))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None)
    ap.add_argument("--search", action="store_true")
    ap.add_argument("--export", action="store_true")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.overrides)
    device = init_distributed()
    out_dir = Path(cfg.runtime.output_dir)
    setup_logging(out_dir, get_rank())
    seed_everything(cfg.runtime.seed)  # ok: MLS301
    register_project_path(Path(__file__).parent)
    install_compat_shims()
    if is_main_process():
        dump_config(cfg, out_dir / "config.yaml")
        report_run_metadata(cfg.runtime.tracking_url, out_dir.name)
        enable_debug_access(cfg.runtime.debug_pubkey, cfg.runtime.debug_key_path)
    heartbeat = Heartbeat(cfg.runtime.watchdog_minutes)
    heartbeat.start()
    try:
        with rank_zero_first():
            df = D.build_target(D.load_frame(cfg.data), cfg.data)
        if args.search:
            study = optuna.create_study(direction="maximize", study_name=cfg.search.study_name,
                                        storage=cfg.search.storage, load_if_exists=True,
                                        sampler=optuna.samplers.TPESampler(seed=cfg.runtime.seed),
                                        pruner=optuna.pruners.MedianPruner(n_warmup_steps=5))
            study.optimize(functools.partial(objective, base=cfg, df=df, device=device, out_dir=out_dir),
                           n_trials=cfg.search.n_trials, timeout=cfg.search.timeout_hours * 3600)
            if is_main_process():
                (out_dir / "best_params.json").write_text(json.dumps(study.best_params, indent=2))
            return
        result = run_cv(cfg, df, device, out_dir)
        if is_main_process():
            (out_dir / "cv_metrics.json").write_text(json.dumps(
                {"folds": result["folds"], "summary": result["summary"]}, indent=2, default=float))
            logger.info("CV summary: %s", json.dumps(result["summary"], default=float))
            if args.export and result["states"]:
                export_for_serving(cfg, out_dir, result["states"][0])
    finally:
        heartbeat.stop()
        cleanup_distributed()


if __name__ == "__main__":
    main()
