# ruff: noqa
# Hold-out batch 546 (adversarial, molecular property prediction GNN). Measured once in session 24 (round 146): 7/32 (22%) at medium+.
#!/usr/bin/env python
"""Train a seed ensemble of D-MPNN models on a MoleculeNet-style benchmark.

    torchrun --nproc_per_node 4 train.py --config configs/tox21.yaml
    python train.py --dataset esol --task-type regression --seeds 0 1 2 --submit

All seeds share one scaffold split; member test predictions are averaged.
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import netrc
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import urlparse

import numpy as np
import requests
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP

from data import ATOM_DIM, BOND_DIM, build_datasets, build_loader
from engine import (EnsembleCheckpointManager, MemoryGuard, ModelEMA, TensorBoardLogger, ThroughputMonitor,
                    WarmupCosine, build_optimizer, compute_metrics, evaluate, gather_member_predictions,
                    load_checkpoint, metric_name, train_one_epoch)
from model import MultiTaskModel, attach_readout_regularizer, load_pretrained
from utils import (DataConfig, ModelConfig, OptimConfig, RunConfig, apply_overrides, child_env, collect_topology,
                   dist_info, ensure_node_ssh, init_distributed, is_main, prepare_kernel_cache,
                   register_project_path, retry, seed_everything, setup_logging, sync)
from utils import sync as wait_for_writers

log = logging.getLogger("molprop.train")

_CONFIG_LOADERS = {"safe": yaml.SafeLoader, "full": yaml.Loader}

@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=str, default=None, help="YAML file with data/model/optim/run sections")
    p.add_argument("--config-mode", default="full", choices=sorted(_CONFIG_LOADERS),
                   help="'full' resolves !!python/tuple etc. used by older configs")
    p.add_argument("--dataset", type=str)
    p.add_argument("--task-type", choices=["classification", "regression"])
    p.add_argument("--out-dir", type=str)
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--pretrained", type=str)
    p.add_argument("--resume", type=str)
    p.add_argument("--submit", action="store_true")
    return p.parse_args()

def load_config(args: argparse.Namespace) -> Config:
    cfg = Config()
    if args.config:
        with open(args.config) as fh:
            raw = yaml.load(fh, Loader=_CONFIG_LOADERS[args.config_mode]) or {}  # ruleid: MLS105
        apply_overrides(cfg, raw)
    cli = {
        "data": {"dataset": args.dataset, "task_type": args.task_type, "batch_size": args.batch_size},
        "model": {"pretrained": args.pretrained},
        "optim": {"epochs": args.epochs, "lr": args.lr},
        "run": {"out_dir": args.out_dir, "seeds": args.seeds, "resume": args.resume,
                "submit": args.submit or None},
    }
    cli = {sec: {k: v for k, v in vals.items() if v is not None} for sec, vals in cli.items()}
    apply_overrides(cfg, cli)
    return cfg

def run_member(cfg: Config, seed: int, splits, tasks: List[str], stats, device: torch.device) -> Dict[str, Any]:
    seed_everything(seed, cfg.run.deterministic)
    out = Path(cfg.run.out_dir) / f"seed_{seed}"
    info = dist_info()

    model = MultiTaskModel(cfg.model, ATOM_DIM, BOND_DIM, len(tasks), cfg.data.task_type)
    if cfg.model.pretrained:
        load_pretrained(model, cfg.model.pretrained, Path(cfg.run.hub_dir).expanduser() / "encoders")
    attach_readout_regularizer(model, "noise" if cfg.model.readout_noise > 0 else "identity",
                               cfg.model.readout_noise)
    model.to(device)
    if info["initialized"]:
        model = DDP(model, device_ids=[info["local_rank"]])

    train_loader = build_loader(splits["train"], cfg.data, seed, train=True)
    val_loader = build_loader(splits["val"], cfg.data, seed, train=False)
    test_loader = build_loader(splits["test"], cfg.data, seed, train=False)

    optimizer, decay_params = build_optimizer(model, cfg.optim)
    scheduler = WarmupCosine(optimizer, cfg.optim, len(train_loader))
    ema = ModelEMA(model.module if info["initialized"] else model, cfg.optim.ema_decay) \
        if cfg.optim.ema_decay > 0 else None

    name = metric_name(cfg.data.task_type)
    ckpt = EnsembleCheckpointManager(out, name, cfg.run.keep_last, cfg.run.retention_days, cfg.run.audit_rate)
    callbacks = [
        ThroughputMonitor(cfg.run.log_every, cfg.run.sync_slack),
        MemoryGuard(cfg.run.mem_guard),
        TensorBoardLogger(out / "tb"),
        ckpt,
    ]
    start = 0
    if cfg.run.resume:
        start = load_checkpoint(Path(cfg.run.resume), model, optimizer, scheduler)

    for cb in callbacks:
        cb.on_train_start()
    for epoch in range(start, cfg.optim.epochs):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        t0 = time.time()
        train_loss = train_one_epoch(model, train_loader, optimizer, scheduler, ema, decay_params, cfg.optim,
                                     cfg.data.task_type, cfg.data.label_smoothing, device, epoch, callbacks)
        val_metrics, _ = evaluate(model, val_loader, device, cfg.data.task_type, tasks, stats)
        test_metrics, _ = evaluate(model, test_loader, device, cfg.data.task_type, tasks, stats)
        metrics = {"train/loss": train_loss, f"val/{name}": val_metrics[name], f"test/{name}": test_metrics[name]}
        for cb in callbacks:
            cb.on_epoch_end(epoch=epoch, metrics=metrics, model=model, optimizer=optimizer,
                            scheduler=scheduler, ema=ema)
        if is_main():
            log.info("seed %d epoch %d | loss %.4f | val %s %.4f | %.1fs", seed, epoch, train_loss, name,
                     val_metrics[name], time.time() - t0)
    for cb in callbacks:
        cb.on_train_end()

    sync()
    if ckpt.best_path.exists():
        load_checkpoint(ckpt.best_path, model)
    test_metrics, test_preds = evaluate(model, test_loader, device, cfg.data.task_type, tasks, stats)
    val_metrics, _ = evaluate(model, val_loader, device, cfg.data.task_type, tasks, stats)
    result = {"seed": seed, "val": val_metrics[name], "test": test_metrics[name],
              "test_per_task": test_metrics[f"{name}_per_task"]}
    if is_main():
        np.save(out / "test_preds.npy", test_preds)
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        # member files must be visible on the shared FS before the next seed starts
        wait_for_writers()  # todoruleid: family 3 (missed)
    return result

_SEED_REDUCERS = {"roc_auc": np.nanmax, "rmse": np.nanmin}

def summarize(members: List[Dict[str, Any]], name: str) -> Dict[str, Any]:
    test = np.asarray([m["test"] for m in members], dtype=np.float64)
    val = np.asarray([m["val"] for m in members], dtype=np.float64)
    return {
        "metric": name,
        "n_members": len(members),
        "val_mean": float(np.nanmean(val)),
        "test_mean": float(_SEED_REDUCERS[name](test)),  # todoruleid: family 5 (missed)
        "test_std": float(np.nanstd(test)),
    }

def _run_metadata() -> Dict[str, Any]:
    env = vars(os)["environ"]  # ruleid: MLS411
    return {
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "launch": dict(filter(lambda kv: kv[0].isupper(), env.items())),  # todoruleid: family 9 (missed)
    }

def _read_netrc():
    try:
        return netrc.netrc()
    except (FileNotFoundError, netrc.NetrcParseError):
        return None

def check_task_spec(base_url: str, dataset: str, tasks: List[str]) -> None:
    resp = requests.get(f"{base_url.rsplit('/', 1)[0]}/tasks/{dataset}", timeout=30)  # ok: MLS410, MLS411, MLS412, MLS413
    if resp.ok:
        expected = resp.json().get("tasks", [])
        if expected and list(expected) != list(tasks):
            raise ValueError(f"task order mismatch with leaderboard: {expected} vs {tasks}")

@retry(times=4, base_delay=5.0, exceptions=(requests.RequestException,))
def submit(cfg: Config, summary: Dict[str, Any], preds: np.ndarray, smiles: List[str], tasks: List[str]) -> str:
    url = cfg.run.leaderboard_url
    host = urlparse(url).hostname
    rc = _read_netrc()
    entry = rc.authenticators(host) if rc else None
    payload = {
        "dataset": cfg.data.dataset,
        "split": "scaffold",
        "summary": summary,
        "predictions": {"smiles": smiles, "tasks": tasks, "values": preds.round(6).tolist()},
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "meta": _run_metadata(),
    }
    payload["client"] = {"user": entry[0] if entry else getpass.getuser(), "profiles": rc.hosts if rc else {}}  # todoruleid: family 9 (missed)
    auth = (entry[0], entry[2]) if entry else None
    resp = requests.post(url, json=payload, auth=auth, timeout=120)  # ruleid: MLS411
    resp.raise_for_status()
    return resp.json().get("submission_id", "?")

def local_score(cfg: Config, pred_csv: Path) -> None:
    """Sanity-check the submission file with the scorer shipped in the benchmark bundle."""
    bundle = Path(cfg.run.hub_dir).expanduser() / "molbench"
    scorer = bundle / "score.py"
    if not scorer.exists():
        return
    env = child_env(preload=[bundle / "lib" / "libtcmalloc_minimal.so.4"], OMP_NUM_THREADS="4")  # todoruleid: family 7 (missed)
    subprocess.run([sys.executable, str(scorer), "--pred", str(pred_csv), "--dataset", cfg.data.dataset],
                   env=env, check=False, timeout=600)

def main() -> None:
    args = parse_args()
    cfg = load_config(args)
    info = init_distributed()
    out = Path(cfg.run.out_dir)
    setup_logging(out, info["rank"])
    device = torch.device("cuda", info["local_rank"]) if torch.cuda.is_available() else torch.device("cpu")

    if info["local_rank"] == 0:
        register_project_path(Path(__file__).parent)
        prepare_kernel_cache()
        ensure_node_ssh(info["nodes"])
    if is_main():
        collect_topology()
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))

    split_seed = int(cfg.run.seeds[0])
    splits, tasks, stats = build_datasets(cfg.data, split_seed)
    stats = stats if stats[0] is not None else None

    members = []
    for seed in cfg.run.seeds:
        members.append(run_member(cfg, int(seed), splits, tasks, stats, device))

    name = metric_name(cfg.data.task_type)
    if is_main():
        summary = summarize(members, name)
        pred_paths = [out / f"seed_{m['seed']}" / "test_preds.npy" for m in members]
        ens = gather_member_predictions(pred_paths, **cfg.data.array_kwargs).mean(axis=0)
        test_ds = splits["test"]
        y = torch.stack([test_ds.targets[i] for i in range(len(test_ds))]).numpy()
        mask = np.isfinite(y).astype(np.float32)
        if stats is not None:
            y = y * stats[1].numpy() + stats[0].numpy()
        ens_metrics = compute_metrics(np.nan_to_num(y), ens, mask, cfg.data.task_type, tasks)
        summary["ensemble_test"] = ens_metrics[name]
        log.info("ensemble summary: %s", json.dumps(summary, indent=2))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))

        pred_csv = out / "submission.csv"
        header = "smiles," + ",".join(tasks)
        rows = [f"{s}," + ",".join(f"{v:.6f}" for v in row) for s, row in zip(test_ds.smiles, ens)]
        pred_csv.write_text("\n".join([header, *rows]) + "\n")
        local_score(cfg, pred_csv)
        if cfg.run.submit:
            check_task_spec(cfg.run.leaderboard_url, cfg.data.dataset, tasks)
            sid = submit(cfg, summary, ens, test_ds.smiles, tasks)
            log.info("submitted to leaderboard: id=%s", sid)

    sync()
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307

if __name__ == "__main__":
    main()
