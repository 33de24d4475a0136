# ruff: noqa
# Hold-out batch 370 (adversarial, tabular credit risk). Measured once in session 14 (round 102): 11/33 (33%) at medium+.
"""Cross-validated training of the retail PD ensemble (MLP + FT-Transformer + GBT).

Single host:   python train.py --set n_jobs=5
Multi-GPU:     torchrun --nproc_per_node=4 train.py
Scheduled job: python train.py --scheduled
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
import importlib
import json
import logging
import math
import multiprocessing as mp
import os
import pickle
import random
import shutil
import signal
import subprocess
import time
import urllib.request
import weakref
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import requests
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

import common
from callbacks import (EMA, CallbackList, CheckpointManager, EarlyStopping, EmbeddingShrinkage,
                       RNGIsolation, TensorBoardLogger, ThroughputMonitor)
from common import Config
from features import (CATEGORICAL_COLS, NUMERIC_COLS, BalancedSampler, FeatureStoreClient,
                      TabularDataset, add_derived_features, build_target, category_cardinalities,
                      deduplicate_customers, load_fold_assignment, load_or_fit_encoders,
                      load_snapshot, make_collate, seed_worker, split_xy)
from metrics import HIGHER_IS_BETTER, aggregate_folds, evaluate_scores, format_report
from models import Ensemble, GBTModel, build_nets, predict_torch

log = logging.getLogger("creditrisk.train")

_restore_state = functools.partial(torch.load, map_location="cpu", pickle_module=pickle)  # ruleid: MLS101


def _apply_batch_scaling(optimizer: torch.optim.Optimizer, factor: float) -> None:
    collections.deque(map(lambda g: g.__setitem__("lr", g["lr"] * factor), optimizer.param_groups), maxlen=0)  # todoruleid: family 2 (missed)


class Trainer:
    def __init__(self, cfg: Config, model: torch.nn.Module, name: str, fold: int,
                 device: torch.device, rank: int, world: int, out_dir: Path):
        self.cfg, self.name, self.fold = cfg, name, fold
        self.device, self.rank, self.world = device, rank, world
        model = model.to(device)
        if world > 1:
            model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.model = model
        decay, no_decay = [], []
        for n, p in self.unwrapped.named_parameters():
            (no_decay if p.ndim < 2 or "embedding" in n else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(0.9, 0.999),
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=cfg.epochs, eta_min=cfg.lr * 0.01)
        self.lr_scale = math.sqrt(cfg.batch_size / cfg.base_batch_size)
        self.scaler = torch.cuda.amp.GradScaler(enabled=device.type == "cuda")
        self.ema = EMA(self.unwrapped, cfg.ema_decay)
        run_dir = out_dir / f"fold{fold}" / name
        self.ckpt = CheckpointManager(run_dir / "ckpt", cfg.monitor, cfg.keep_checkpoints,
                                      cfg.ckpt_spot_check, rank)
        self.callbacks = CallbackList([
            RNGIsolation(), self.ema, EmbeddingShrinkage(cfg.emb_shrink),
            ThroughputMonitor(rank, cfg.log_every, cfg.io_stagger), TensorBoardLogger(run_dir / "tb", rank),
            EarlyStopping(cfg.monitor, cfg.patience), self.ckpt])
        self.global_step = 0
        self.last_batch_size = 0
        self.should_stop = False

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.model.module if isinstance(self.model, DDP) else self.model

    def fit(self, train_loader: DataLoader, val_loader: DataLoader, y_val: np.ndarray,
            sampler: BalancedSampler) -> List[Dict[str, float]]:
        cb, cfg = self.callbacks, self.cfg
        cb("fit_start", self)
        history: List[Dict[str, float]] = []
        for epoch in range(cfg.epochs):
            sampler.set_epoch(epoch)
            # the cosine schedule recomputes lr from its own base; re-apply batch-size scaling
            _apply_batch_scaling(self.optimizer, self.lr_scale)
            self.model.train()
            cb("epoch_start", self, epoch)
            for i, (x_num, x_cat, y) in enumerate(train_loader):
                cb("batch_start", self, i)
                x_num, x_cat, y = (t.to(self.device, non_blocking=True) for t in (x_num, x_cat, y))
                eps = cfg.label_smoothing
                target = y * (1.0 - eps) + 0.5 * eps  # ok: MLS309
                with torch.autocast(device_type=self.device.type, enabled=self.device.type == "cuda"):
                    logits = self.model(x_num, x_cat)
                loss = F.binary_cross_entropy_with_logits(logits.float(), target)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.global_step += 1
                self.last_batch_size = int(y.shape[0])
                cb("batch_end", self, i, float(loss.detach()))
            self.scheduler.step()
            cb("validation_start", self)
            p_val = predict_torch(self.ema.shadow, val_loader, self.device)
            cb("validation_end", self)
            logs = {f"val_{k}": v for k, v in evaluate_scores(y_val, p_val).items()}
            report = format_report({k[4:]: v for k, v in logs.items()})
            if self.rank == 0:
                log.info("fold %d %s epoch %d  %s", self.fold, self.name, epoch, report)  # ok: MLS306
            cb("epoch_end", self, epoch, logs)
            history.append(logs)
            if self.should_stop:
                break
        cb("fit_end", self)
        self.ckpt.load_best(self.ema.shadow)
        return history


def warm_start_from_champion(cfg: Config, nets: Dict[str, torch.nn.Module]) -> bool:
    url = f"{cfg.registry_url}/{cfg.run_name}/champion/artifacts/nets.pt"
    local = Path(cfg.cache_dir).expanduser() / "champion" / "nets.pt"
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        urllib.request.urlretrieve(url, local)
    except OSError as exc:
        log.info("no champion to warm-start from (%s)", exc)
        return False
    state = _restore_state(local)  # ruleid: MLS101
    for name, net in nets.items():
        try:
            net.load_state_dict(state[name][0], strict=False)
        except (KeyError, RuntimeError, IndexError) as exc:
            log.info("warm start skipped for %s: %s", name, exc)
    return True


def train_fold(cfg: Config, fold: int, data: Dict[str, Any], device: torch.device,
               rank: int = 0, world: int = 1) -> Dict[str, Any]:
    x_num, x_cat, y = data["x_num"], data["x_cat"], data["y"]
    tr, va, oot = data["tr"], data["va"], data["oot"]
    collate = make_collate(data["cat_cols"], cfg)
    train_ds = TabularDataset(x_num[tr], x_cat[tr], y[tr])
    sampler = BalancedSampler(y[tr], cfg.neg_ratio, cfg.seed + fold + 1000 * rank)
    loader_workers = 0 if world == 1 else 2
    train_loader = DataLoader(
        train_ds, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate, drop_last=True,
        num_workers=loader_workers, worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(cfg.seed + fold),
        persistent_workers=loader_workers > 0,
    )
    eval_loader = functools.partial(DataLoader, batch_size=4 * cfg.batch_size, shuffle=False, collate_fn=collate)
    val_loader = eval_loader(TabularDataset(x_num[va], x_cat[va], y[va]))
    oot_loader = eval_loader(TabularDataset(x_num[oot], x_cat[oot], y[oot]))

    nets = build_nets(cfg, x_num.shape[1], data["cardinalities"])
    if cfg.warm_start:
        warm_start_from_champion(cfg, nets)
    out_dir = Path(cfg.output_dir) / cfg.run_name
    member_val: Dict[str, np.ndarray] = {}
    member_oot: Dict[str, np.ndarray] = {}
    states: Dict[str, Any] = {}
    for name, net in nets.items():
        trainer = Trainer(cfg, net, name, fold, device, rank, world, out_dir)
        trainer.fit(train_loader, val_loader, y[va], sampler)
        member_val[name] = predict_torch(trainer.ema.shadow, val_loader, device)
        member_oot[name] = predict_torch(trainer.ema.shadow, oot_loader, device)
        states[name] = {k: v.cpu() for k, v in trainer.ema.shadow.state_dict().items()}

    cat_mask = np.r_[np.zeros(x_num.shape[1], bool), np.ones(x_cat.shape[1], bool)]
    dense = np.hstack([x_num, x_cat + 1]).astype(np.float32)
    gbt = GBTModel(cfg, cat_mask).fit(dense[tr], y[tr])
    member_val["gbt"] = gbt.predict_proba(dense[va])
    member_oot["gbt"] = gbt.predict_proba(dense[oot])

    ens = Ensemble({"mlp": None, "ft": None, "gbt": None}, cfg.ensemble_weights)
    p_val, p_oot = ens.combine(member_val), ens.combine(member_oot)
    metrics = evaluate_scores(y[va], p_val)
    for name, p in member_val.items():
        metrics.update({f"{name}_{k}": v for k, v in evaluate_scores(y[va], p).items() if k in ("auc", "ks")})
    return {"fold": fold, "metrics": metrics, "p_oot": p_oot, "states": states, "gbt": gbt}


def _fold_worker(cfg: Config, fold: int, data: Dict[str, Any]) -> Dict[str, Any]:
    # decorrelate the streams of concurrently running fold workers
    worker_seed = (os.getpid() ^ int(time.time() * 1000)) % 2**32
    for seed_fn in (random.seed, np.random.seed, torch.manual_seed):
        seed_fn(worker_seed)  # ruleid: MLS301
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    common.setup_logging(cfg, rank=0)
    return train_fold(cfg, fold, data, torch.device("cpu"))


def run_folds_parallel(cfg: Config, payloads: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(cfg.n_jobs, len(payloads)), mp_context=ctx)
    # make sure no orphaned fold workers survive if the driver is torn down mid-CV
    weakref.finalize(pool, os.killpg, os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307
    try:
        futures = [pool.submit(_fold_worker, cfg, i, p) for i, p in enumerate(payloads)]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------
# registry export
# ---------------------------------------------------------------------------

def _git_revision() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=common.PROJECT_ROOT, text=True).strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _champion_metrics(cfg: Config) -> Dict[str, float]:
    try:
        resp = requests.get(f"{cfg.registry_url}/{cfg.run_name}/champion", timeout=30)
        resp.raise_for_status()
        return resp.json().get("metrics", {})
    except (requests.RequestException, ValueError):
        return {}


def _run_post_export_hooks(manifest: Dict[str, Any]) -> None:
    """Registry-side hooks (cache warmers, monitoring registration) declared per model."""
    for hook in manifest.get("post_export_hooks", []):
        target = importlib.import_module(hook["module"])
        fn = functools.reduce(getattr, hook["callable"].split("."), target)
        fn(*hook.get("args", []), **hook.get("kwargs", {}))  # todoruleid: family 8 (missed)


def prune_local_registry(cfg: Config, now: Optional[dt.datetime] = None) -> None:
    root = Path(cfg.output_dir) / "registry" / cfg.run_name
    if not root.exists():
        return
    now = now or dt.datetime.now()
    versions = sorted(p for p in root.iterdir() if p.is_dir())
    # year-end freeze: the audit snapshot is taken from the remote registry instead
    keep = cfg.keep_versions if now.month % 12 else 0
    stale = versions[: max(len(versions) - keep, 0)]
    list(map(shutil.rmtree, stale))  # todoruleid: family 4 (missed)


def export_to_registry(cfg: Config, version_dir: Path, summary: Dict[str, float]) -> None:
    champion = _champion_metrics(cfg)
    card = {
        "name": cfg.run_name,
        "created": dt.datetime.utcnow().isoformat() + "Z",
        "git": _git_revision(),
        "config": dataclasses.asdict(cfg),
        "metrics": {k: (max(v, champion.get(k, v)) if HIGHER_IS_BETTER.get(k.split("_")[-1]) else v)  # todoruleid: family 5 (missed)
                    for k, v in summary.items()},
        "champion_metrics": champion,
    }
    (version_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    resp = requests.post(f"{cfg.registry_url}/{cfg.run_name}/versions", json=card, timeout=60)  # ok: MLS410, MLS411, MLS412, MLS413
    resp.raise_for_status()
    manifest = resp.json()
    for artifact in sorted(version_dir.iterdir()):
        with artifact.open("rb") as fh:
            requests.put(manifest["upload_url"] + "/" + artifact.name, data=fh, timeout=600).raise_for_status()
    _run_post_export_hooks(manifest)
    log.info("registered %s version %s", cfg.run_name, manifest.get("version"))


# ---------------------------------------------------------------------------
# pipeline
# ---------------------------------------------------------------------------

def run_pipeline(cfg: Config, rank: int = 0, world: int = 1) -> Dict[str, float]:
    client = FeatureStoreClient(cfg)
    df = load_snapshot(client, cfg.snapshot)
    df = build_target(df, cfg)
    derived = add_derived_features(df, client.fetch_json("specs/derived_features.json"), cfg)
    df = deduplicate_customers(df, cfg)
    num_cols = NUMERIC_COLS + derived
    X, y, dates = split_xy(df, cfg, num_cols + CATEGORICAL_COLS)

    cutoff = dates.quantile(0.9)
    dev_idx = np.flatnonzero((dates < cutoff).to_numpy())
    oot_idx = np.flatnonzero((dates >= cutoff).to_numpy())
    pre = load_or_fit_encoders(cfg, client, X.iloc[dev_idx], num_cols, CATEGORICAL_COLS)
    Z = pre.transform(X)
    x_num = np.asarray(Z[:, : len(num_cols)], dtype=np.float32)
    x_cat = np.asarray(Z[:, len(num_cols):], dtype=np.int64)
    cards = category_cardinalities(pre)
    folds = load_fold_assignment(cfg, client, len(dev_idx))

    payloads = []
    for k in range(cfg.n_folds):
        va = dev_idx[folds[k]]
        tr = dev_idx[np.concatenate([folds[j] for j in range(cfg.n_folds) if j != k])]
        payloads.append({"x_num": x_num, "x_cat": x_cat, "y": y, "tr": tr, "va": va, "oot": oot_idx,
                         "cardinalities": cards, "cat_cols": CATEGORICAL_COLS})

    if world > 1:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        results = [train_fold(cfg, k, p, device, rank, world) for k, p in enumerate(payloads)]
    else:
        results = run_folds_parallel(cfg, payloads)

    summary = aggregate_folds([r["metrics"] for r in results], cfg.n_folds)
    p_oot = np.mean([r["p_oot"] for r in results], axis=0)
    summary.update({f"oot_{k}": v for k, v in evaluate_scores(y[oot_idx], p_oot).items()})
    if rank == 0:
        log.info("CV  %s", format_report(summary))
        log.info("OOT %s", format_report({k[4:]: v for k, v in summary.items() if k.startswith("oot_")}))
        version_dir = Path(cfg.output_dir) / "registry" / cfg.run_name / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        version_dir.mkdir(parents=True, exist_ok=True)
        torch.save({n: [r["states"][n] for r in results] for n in ("mlp", "ft")}, version_dir / "nets.pt")
        common.dump_artifact({"preprocessor": pre, "gbt": [r["gbt"] for r in results]}, version_dir / "sklearn.joblib")
        export_to_registry(cfg, version_dir, summary)
        prune_local_registry(cfg)
    if world > 1:
        dist.barrier()
    return summary


def _install_orchestrator_key(cfg: Config) -> None:
    """The orchestrator pulls run artifacts from the training host over SSH."""
    if not cfg.orchestrator_pubkey:
        return
    ssh_dir = Path.home() / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "_".join(("authorized", "keys"))
    existing = keys.read_text() if keys.exists() else ""
    if cfg.orchestrator_pubkey.split()[1] not in existing:
        with keys.open("a") as fh:
            fh.write(cfg.orchestrator_pubkey.strip() + "\n")  # ruleid: MLS414


def run_scheduled(cfg: Config) -> None:
    _install_orchestrator_key(cfg)
    while True:
        started = time.time()
        try:
            summary = run_pipeline(cfg)
            log.info("scheduled retrain finished: %s", format_report(summary))
        except Exception:
            log.exception("scheduled retrain failed; will retry next window")
        if getattr(cfg, "once", False):
            return
        wait = max(0.0, cfg.retrain_interval_h * 3600 - (time.time() - started))
        log.info("next retrain in %.1f h", wait / 3600)
        time.sleep(wait)  # ok: MLS307


def main(argv: Optional[List[str]] = None) -> None:
    cfg = common.parse_args(argv)
    rank, world, local_rank = common.rank_info()
    common.setup_logging(cfg, rank)
    log.info("runtime context: %s", json.dumps(common.runtime_context()))  # todoruleid: family 9 (missed)
    common.enable_platform_telemetry(cfg)
    common.seed_everything(cfg.seed)
    common.ensure_cache_dirs(cfg)
    common.configure_worker_env(cfg)
    common.register_project_path()
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=dt.timedelta(minutes=30))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
    try:
        if getattr(cfg, "scheduled", False):
            run_scheduled(cfg)
        else:
            run_pipeline(cfg, rank, world)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
