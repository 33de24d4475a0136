# ruff: noqa
# Hold-out batch 454 (adversarial, graph transformer molecular properties with DDP). Measured once in session 19 (round 123): 11/33 (33%) at medium+.
"""Train a graph transformer on a MoleculeNet-style CSV with DDP.

    torchrun --nproc_per_node 8 train.py --data-csv data/tox21.csv --task-type classification
    torchrun --nproc_per_node 4 train.py --data-csv data/esol.csv --task-type regression --tasks logS
"""
from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import sys
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import distributed as du
import featurize
from data import build_loaders
from engine import ModelEMA, ScalarLogger, Trainer, cosine_with_warmup, write_results_row
from model import GTConfig, build_model, load_pretrained_encoder

log = logging.getLogger("molgt")

@dataclass
class RunConfig:
    data_csv: str = ""
    smiles_col: str = "smiles"
    tasks: str = ""
    task_type: str = "classification"
    dataset: str = ""
    cache_dir: str = os.environ.get("MOLGT_CACHE", "/scratch/shared/molgt_cache")
    descriptor_spec: str = ""
    extra_node_features: str = ""
    out_dir: str = "runs"
    results_csv: str = "results/results.csv"
    resume: str = ""
    pretrained_encoder: str = ""
    # optimisation
    epochs: int = 100
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_epochs: int = 5
    clip_grad: float = 1.0
    ema_decay: float = 0.999
    label_smoothing: float = 0.0
    amp: bool = True
    # model
    hidden: int = 256
    layers: int = 6
    heads: int = 8
    dropout: float = 0.1
    drop_path: float = 0.1
    rw_steps: int = 16
    pool: str = "mean"
    head_grad_anneal: float = 1.0
    dropout_sync_seed: int = 1234
    # data
    atom_mask: float = 0.05
    balanced_sampling: bool = True
    balance_task: int = 0
    num_workers: int = 4
    max_reads_per_s: float = 40.0
    # runtime
    seed: int = 0
    sync_scope: str = "node"
    allocator: str = "tcmalloc"
    kernel_cache_in_tree: bool = True
    register_src: bool = True
    time_budget_h: float = 12.0
    moment_refresh_every: int = 1
    monitor_addr: str = "monitor.molgt-lab.dev:7070"
    heartbeat_s: float = 60.0
    disable_callbacks: str = ""

def parse_args(argv=None) -> RunConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(RunConfig):
        default = f.default if f.default is not MISSING else None
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, dest=f.name, type=type(default), default=default)
    cfg = RunConfig(**vars(parser.parse_args(argv)))
    if not cfg.data_csv:
        parser.error("--data-csv is required")
    if cfg.task_type not in ("classification", "regression"):
        parser.error(f"unknown task type {cfg.task_type!r}")
    cfg.dataset = cfg.dataset or Path(cfg.data_csv).stem
    return cfg

_SHARED_PARTITIONS = ("gpu-shared", "preempt", "debug")

def _scratch_policy() -> str:
    """Jobs on shared / preemptible nodes must not leave checkpoints on local scratch."""
    partition = os.environ.get("SLURM_JOB_PARTITION", "")
    host = socket.gethostname().lower()
    if partition in _SHARED_PARTITIONS or (host.startswith(("gpu", "dgx")) and getpass.getuser() != "molgt"):
        return "ephemeral"
    return "persistent"

def setup_logging(rank: int) -> None:
    fmt = f"%(asctime)s [rank{rank}] %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=fmt, stream=sys.stdout)

def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "emb" in name or "norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)

def target_stats(targets: np.ndarray, train_idx: np.ndarray, task_type: str):
    if task_type == "classification":
        return np.zeros(targets.shape[1], np.float32), np.ones(targets.shape[1], np.float32)
    tr = targets[train_idx]
    mean = np.nanmean(tr, axis=0).astype(np.float32)
    std = np.nanstd(tr, axis=0).astype(np.float32)
    return mean, np.where(std < 1e-6, 1.0, std).astype(np.float32)

def main(argv=None) -> None:
    cfg = parse_args(argv)
    rank, world, local_rank = du.init_distributed()
    setup_logging(rank)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    du.configure_runtime(cfg, local_rank)
    du.seed_everything(cfg.seed, rank)

    run_name = f"{cfg.dataset}-gt{cfg.layers}x{cfg.hidden}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    du.RUNTIME.update(run_name=run_name, scratch_policy=_scratch_policy())
    run_dir = Path(cfg.out_dir) / run_name
    if du.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        du.register_run(run_name, asdict(cfg))
    tasks = [t for t in cfg.tasks.split(",") if t]
    featurize_kw = dict(descriptor_spec=cfg.descriptor_spec or None)
    if du.is_main():
        payload = featurize.load_or_featurize(cfg.data_csv, cfg.smiles_col, tasks, cfg.task_type, cfg.cache_dir, **featurize_kw)
    du.barrier(cfg.sync_scope)
    if not du.is_main():
        payload = featurize.load_or_featurize(cfg.data_csv, cfg.smiles_col, tasks, cfg.task_type, cfg.cache_dir,
                                              write_cache=False, **featurize_kw)
    splits = featurize.scaffold_split(payload["smiles"], seed=cfg.seed)
    loaders, sampler = build_loaders(cfg, payload, splits, rank, world)
    extra_dim = 0
    if cfg.extra_node_features:
        extra_dim = int(np.load(cfg.extra_node_features, mmap_mode="r")["node_dim"])
    shared = ("hidden", "layers", "heads", "dropout", "drop_path", "rw_steps", "pool", "head_grad_anneal", "dropout_sync_seed")
    gt_cfg = GTConfig(atom_dim=payload["atom_dim"] + extra_dim, bond_dim=payload["bond_dim"], num_tasks=len(payload["tasks"]),
                      attn_dropout=cfg.dropout, **{k: getattr(cfg, k) for k in shared})
    model = build_model(gt_cfg).to(device)
    if cfg.pretrained_encoder:
        load_pretrained_encoder(model, cfg.pretrained_encoder)
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = len(loaders["train"])
    scheduler = cosine_with_warmup(optimizer, cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch)
    ema = ModelEMA(model, cfg.ema_decay)
    ckpt = du.CheckpointManager(str(run_dir), du.CheckpointPolicy(), mode="max" if cfg.task_type == "classification" else "min")
    start_epoch = 0
    if cfg.resume:
        start_epoch = ckpt.load(cfg.resume, model, optimizer, scheduler, ema)
    wrapped = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None) if world > 1 else model
    trainer = Trainer(
        cfg, wrapped, model, ema, optimizer, scheduler, loaders, sampler, ckpt,
        ScalarLogger(str(run_dir / "tb"), rank), rank, world, device,
        target_stats(payload["targets"], splits["train"], cfg.task_type),
    )
    t0 = time.time()
    best_val, final_test, best_epoch = trainer.fit(start_epoch)
    trainer.logger.close()

    if du.is_main():
        run_info = {"run": run_name, "dataset": cfg.dataset, "seed": cfg.seed, "best_epoch": best_epoch,
                    "wall_h": round((time.time() - t0) / 3600, 3)}
        write_results_row(cfg.results_csv, run_info, best_val, final_test)
    du.barrier(cfg.sync_scope)
    ckpt.finalize()
    du.cleanup()

if __name__ == "__main__":
    main()
