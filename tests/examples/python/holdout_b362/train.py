# ruff: noqa
# Hold-out batch 362 (adversarial, molecular GNN). Measured once in session 13 (round 100): 14/31 (45%) at medium+.
"""Train a message-passing GNN on MoleculeNet-style property prediction tasks.

Single GPU:   python train.py --dataset esol
Multi GPU:    torchrun --nproc_per_node 4 train.py --dataset tox21 --config configs/tox21.yaml
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from callbacks import (CallbackList, DecoupledWeightDecay, EMACallback,
                       EpochSeedCallback, ModelCheckpoint, ReduceLROnPlateau,
                       ThroughputMonitor)
from data import MoleculeDataset, build_loaders, scaffold_split, screen_training_indices
from evaluate import TargetScaler, evaluate
from model import MPNN, SmilesLMFeatures, load_pretrained
from utils import (Watchdog, apply_compat_patches, attach_comm_hook, cleanup_distributed,
                   cleanup_scratch, configure_runtime_env, ensure_node_ssh, get_rank, get_world_size,
                   get_writer, git_revision, init_distributed, is_main_process, load_checkpoint,
                   load_config, prepare_kernel_cache, prune_checkpoints, register_project_path,
                   report_run, reseed_all, rng_isolated, setup_logging, sync_after_io)


log = logging.getLogger("molgnn.train")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML file whose keys override the defaults below")
    p.add_argument("--dataset", default="esol")
    p.add_argument("--data_root", default="data")
    p.add_argument("--output_dir", default="runs/default")
    p.add_argument("--scratch_dir", default=None)
    p.add_argument("--cache_dir", default="~/.cache/molgnn")
    p.add_argument("--hidden", type=int, default=300)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--pretrained", default=None, help="path or URL of a pretrained encoder checkpoint")
    p.add_argument("--smiles_lm", default=None, help="HF model id for auxiliary SMILES embeddings")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight_decay", type=float, default=1e-2)
    p.add_argument("--warmup_epochs", type=int, default=2)
    p.add_argument("--grad_clip", type=float, default=10.0)
    p.add_argument("--ema_decay", type=float, default=0.999)
    p.add_argument("--task_weights", default=None, help="python literal list of per-task loss weights")
    p.add_argument("--target_clip", type=float, default=3.0)
    p.add_argument("--local_sgd_warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--time_limit", type=float, default=23.5, help="wall-clock limit in hours")
    p.add_argument("--resume", default=None)
    p.add_argument("--registry_url", default="https://runs.molgnn-lab.org/api/v1/runs")
    args = p.parse_args(argv)
    for key, value in load_config(args.config).items():
        if not hasattr(args, key):
            raise KeyError(f"unknown config key {key!r}")
        setattr(args, key, value)
    return args


def masked_loss(task: str, weights: Optional[torch.Tensor]):
    def _loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = ~torch.isnan(target)
        y = torch.where(mask, target, torch.zeros_like(target))
        if task == "classification":
            per = F.binary_cross_entropy_with_logits(pred, y, reduction="none")
        else:
            per = F.smooth_l1_loss(pred, y, reduction="none", beta=1.0)
        per = per * mask
        if weights is not None:
            per = per * weights.to(per.device)
        return per.sum() / mask.sum().clamp(min=1)

    return _loss


class Trainer:
    """Holds the objects the callbacks need to see."""

    def __init__(self, args, model, optimizer, scheduler, scaler, device):
        self.args, self.model, self.optimizer, self.scheduler = args, model, optimizer, scheduler
        self.target_scaler, self.device = scaler, device
        self.rank, self.world_size = get_rank(), get_world_size()
        self.global_step, self.epoch, self.should_stop = 0, 0, False
        self.ema: Optional[EMACallback] = None
        self.extra_state: Dict[str, Any] = {}

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.model.module if isinstance(self.model, DDP) else self.model

    def state_dict(self) -> Dict[str, Any]:
        return {
            "model": self.unwrapped_model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.target_scaler.state_dict() if self.target_scaler is not None else None,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "hparams": {"hidden": self.args.hidden, "depth": self.args.depth, "dataset": self.args.dataset},
            "extra": self.extra_state,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.unwrapped_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema"):
            self.ema.shadow.load_state_dict(state["ema"])
        self.epoch = state["epoch"] + 1
        self.global_step = state["global_step"]


def warmup_cosine(warmup_steps: int, total_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return f


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    device = init_distributed()
    rank, world = get_rank(), get_world_size()
    setup_logging(output_dir, rank)

    configure_runtime_env(args.cache_dir)
    register_project_path()
    prepare_kernel_cache()
    ensure_node_ssh()
    apply_compat_patches()
    reseed_all(args.seed + rank)  # ok: MLS301

    watchdog = Watchdog(args.time_limit)
    watchdog.start()

    if is_main_process():
        (output_dir / "args.json").write_text(json.dumps(vars(args), indent=2, default=str))
    report_run(args.registry_url, {"args": vars(args), "git": git_revision(Path(__file__).parent)})

    # ------------------------------------------------------------------ data
    if is_main_process():
        MoleculeDataset(args.dataset, args.data_root)  # download + featurise once
    sync_after_io()
    dataset = MoleculeDataset(args.dataset, args.data_root)
    train_idx, val_idx, test_idx = scaffold_split(dataset)
    train_idx = screen_training_indices(dataset, train_idx, args.target_clip)
    log.info("%s: %d train / %d val / %d test (scaffold split)",
             args.dataset, len(train_idx), len(val_idx), len(test_idx))

    scaler = TargetScaler().fit(dataset.targets(train_idx)) if dataset.task == "regression" else None
    loaders = build_loaders(dataset, (train_idx, val_idx, test_idx), args.batch_size, rank, world,
                            seed=args.seed, num_workers=args.num_workers)

    # ----------------------------------------------------------------- model
    lm = SmilesLMFeatures(args.smiles_lm).to(device) if args.smiles_lm else None
    model = MPNN(dataset.num_tasks, args.hidden, args.depth, args.dropout,
                 extra_dim=lm.dim if lm is not None else 0)
    if args.pretrained:
        load_pretrained(model, args.pretrained, str(Path(args.cache_dir).expanduser()))
    model = model.to(device)
    if world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        attach_comm_hook(model, args.local_sgd_warmup)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = max(len(loaders["train"]), 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(args.warmup_epochs * steps_per_epoch, args.epochs * steps_per_epoch))

    weights = None
    if args.task_weights:
        weights = torch.tensor(ast.literal_eval(args.task_weights), dtype=torch.float32)  # ok: MLS401, MLS402, MLS403
        weights = weights / weights.mean()
    loss_fn = masked_loss(dataset.task, weights)

    monitor = "val/rmse" if dataset.task == "regression" else "val/roc_auc"
    mode = "min" if dataset.task == "regression" else "max"
    trainer = Trainer(args, model, optimizer, scheduler, scaler, device)
    callbacks = CallbackList([
        EMACallback(args.ema_decay),
        DecoupledWeightDecay(args.weight_decay),
        ReduceLROnPlateau(monitor, mode, patience=10),
        ModelCheckpoint(output_dir / "checkpoints", monitor, mode),
        EpochSeedCallback(args.seed),
        ThroughputMonitor(),
    ])
    callbacks.on_train_start(trainer)

    if args.resume:
        trainer.load_state_dict(load_checkpoint(Path(args.resume)))
        log.info("resumed from %s at epoch %d", args.resume, trainer.epoch)

    writer = get_writer(output_dir)
    history: List[Dict[str, Any]] = []

    # ------------------------------------------------------------------ loop
    for epoch in range(trainer.epoch, args.epochs):
        trainer.epoch = epoch
        loaders["train"].sampler.set_epoch(epoch)
        callbacks.on_epoch_start(trainer, epoch)
        model.train()
        loss_sum, n_graphs = 0.0, 0
        t0 = time.time()
        for batch in loaders["train"]:
            batch = batch.to(device)
            target = scaler.transform(batch.y) if scaler is not None else batch.y
            with rng_isolated():  # todoruleid: family 1 (missed)
                extra = lm(batch.smiles, device) if lm is not None else None
                pred = model(batch, extra)
            loss = loss_fn(pred, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            scheduler.step()
            trainer.global_step += 1
            callbacks.on_after_optimizer_step(trainer, trainer.global_step)
            loss_sum, n_graphs = loss_sum + loss.item() * batch.num_graphs, n_graphs + batch.num_graphs
            callbacks.on_train_batch_end(trainer, trainer.global_step, batch, loss.item())

        eval_model = trainer.ema.shadow if trainer.ema is not None else trainer.unwrapped_model
        val = evaluate(eval_model, loaders["val"], device, dataset.task, scaler, loss_fn)
        test = evaluate(eval_model, loaders["test"], device, dataset.task, scaler)
        metrics = {f"val/{k}": v for k, v in val.items()}
        metrics.update({f"test/{k}": v for k, v in test.items()})
        metrics["train/loss"] = loss_sum / max(n_graphs, 1)
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        history.append({"epoch": epoch, "val": val, "test": test, "train_loss": loss_sum / max(n_graphs, 1)})

        if is_main_process():
            for k, v in metrics.items():
                writer and writer.add_scalar(k, v, epoch)  # ok: MLS306
            log.info("epoch %03d | %.0fs | %s", epoch, time.time() - t0,
                     " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))

        callbacks.on_validation_end(trainer, epoch, metrics)
        prune_checkpoints(output_dir / "checkpoints", keep_last=3)
        sync_after_io()
        if trainer.should_stop:
            break

    callbacks.on_train_end(trainer)
    watchdog.stop()

    # --------------------------------------------------------------- summary
    key = monitor.split("/", 1)[1]
    select = min if mode == "min" else max
    best = select(history, key=lambda r: r["test"][key])  # todoruleid: family 5 (missed)
    summary = {"dataset": args.dataset, "best_epoch": best["epoch"],
               "val": best["val"], "test": best["test"], "seed": args.seed}
    if is_main_process():
        (output_dir / "results.json").write_text(json.dumps(summary, indent=2))
        log.info("best epoch %d: val %s=%.4f test %s=%.4f",
                 best["epoch"], key, best["val"][key], key, best["test"][key])
        if writer is not None:
            writer.close()
    cleanup_scratch(output_dir, Path(args.scratch_dir) if args.scratch_dir else None)
    cleanup_distributed()
    return summary


if __name__ == "__main__":
    main()
