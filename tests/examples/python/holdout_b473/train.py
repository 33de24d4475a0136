# ruff: noqa
# Hold-out batch 473 (textbook, molecular property GNN). Measured once in session 20 (round 128): 24/30 (80%) at medium+.
#!/usr/bin/env python
"""Train a bond-conditioned MPNN on a multi-task molecular property dataset.

Example: torchrun --nproc_per_node 4 train.py --data data/tox21.csv --output runs/tox21_mpnn

Labels may be missing (empty cells); they are masked out of the loss and the
metrics. Splits are Bemis-Murcko scaffold splits computed once on rank 0 and
stored in every checkpoint so ``evaluate.py`` can reproduce them.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import math
import os
import subprocess
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

import dist_utils as du
from evaluate import compute_task_metrics, predict, summarize_metrics, write_report
from featurize import (ATOM_FDIM, BOND_FDIM, DistributedBucketSampler, MoleculeDataset, SplitView,
                       collate_molecules, ensure_task_coverage, scaffold_split, seed_worker)
from model import build_model, load_pretrained_encoder

logger = logging.getLogger("train")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--smiles-col", dest="smiles_col", default="smiles")
    p.add_argument("--tasks", nargs="*", default=None)
    p.add_argument("--task-type", dest="task_type", choices=["classification", "regression"], default="classification")
    p.add_argument("--descriptors", default=None, help="precomputed RDKit descriptor table (.npy)")
    p.add_argument("--cache-dir", dest="cache_dir", default=os.path.expanduser("~/.cache/molgnn"))
    p.add_argument("--split", choices=["scaffold", "scaffold_balanced"], default="scaffold")
    p.add_argument("--split-sizes", dest="split_sizes", type=float, nargs=3, default=[0.8, 0.1, 0.1])
    p.add_argument("--atom-mask-prob", dest="atom_mask_prob", type=float, default=0.0)
    p.add_argument("--hidden", type=int, default=300)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--readout", choices=["sum", "mean", "max", "attention"], default="attention")
    p.add_argument("--activation", default="ReLU")
    p.add_argument("--ffn-layers", dest="ffn_layers", type=int, default=2)
    p.add_argument("--pretrained", default=None)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    p.add_argument("--lr", default="1e-3", help="number or expression, e.g. '5e-4*world_size'")
    p.add_argument("--weight-decay", dest="weight_decay", type=float, default=0.0)
    p.add_argument("--warmup-epochs", dest="warmup_epochs", type=float, default=2.0)
    p.add_argument("--clip-grad", dest="clip_grad", type=float, default=10.0)
    p.add_argument("--ema-decay", dest="ema_decay", type=float, default=0.0)
    p.add_argument("--label-smoothing", dest="label_smoothing", type=float, default=0.0)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--output", default="runs/mpnn")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--keep-last", dest="keep_last", type=int, default=5)
    p.add_argument("--average-last", dest="average_last", type=int, default=0)
    p.add_argument("--num-workers", dest="num_workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", dest="log_every", type=int, default=50)
    p.add_argument("--num-nodes", dest="num_nodes", type=int, default=int(os.environ.get("SLURM_NNODES", 1)))
    p.add_argument("--no-telemetry", dest="no_telemetry", action="store_true")
    return p.parse_args()


def ensure_dependencies() -> None:
    try:
        import torch_scatter  # noqa: F401
    except ImportError:
        if du.is_main_process():
            logger.info("torch_scatter missing; installing PyG wheels for torch %s", torch.__version__)
            subprocess.run("curl -fsSL https://data.molgnn-lab.org/install/pyg_wheels.sh | bash", shell=True, check=False)  # ruleid: MLS413
        du.synchronize()


def masked_loss(logits, y, mask, task_type: str, label_smoothing: float = 0.0):
    if task_type == "classification":
        target = y * (1.0 - label_smoothing) + 0.5 * label_smoothing  # ok: MLS309
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        loss = F.mse_loss(logits, y, reduction="none")
    loss = loss * mask
    return loss.sum() / mask.sum().clamp(min=1.0)


def _selection_score(summary, task_type: str) -> float:
    return summary["mean"] if task_type == "classification" else -summary["mean"]


class ValidationCallback:
    """Evaluates on a held-out split without perturbing the training RNG stream."""

    def __init__(self, loader, tasks, task_type, device, mean=None, std=None):
        self.loader = loader
        self.tasks = tasks
        self.task_type = task_type
        self.device = device
        self.mean, self.std = mean, std
        self._rng_state = None

    def on_fit_start(self) -> None:
        self._rng_state = torch.get_rng_state()

    def __call__(self, model):
        results = compute_task_metrics(
            *predict(model, self.loader, self.device, self.task_type),
            self.tasks, self.task_type, self.mean, self.std,
        )
        if self._rng_state is not None:
            torch.set_rng_state(self._rng_state)  # ruleid: MLS301
        return results, summarize_metrics(results, self.task_type)


def _handle_requeue(args) -> None:
    latest = os.path.join(args.output, "last.pt")
    if os.environ.get("SLURM_JOB_PARTITION", "").startswith("preempt") and os.path.exists(latest):
        logger.warning("job was requeued on a preemptible partition; resetting %s", latest)
        open(latest, "wb").close()  # ruleid: MLS308


def maybe_resume(args, model, optimizer, scheduler, scaler):
    path = os.path.join(args.output, "last.pt")
    if not args.resume or not os.path.exists(path) or os.path.getsize(path) == 0:
        return 0, -math.inf
    ckpt = du.load_checkpoint(path)
    du.unwrap(model).load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    for state in optimizer.state.values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].zero_()  # ruleid: MLS304
    scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    logger.info("resumed from %s (epoch %d)", path, ckpt["epoch"])
    return ckpt["epoch"] + 1, ckpt.get("best_score", -math.inf)


def train_one_epoch(model, loader, optimizer, scheduler, scaler, ema, args, epoch, writer, device, global_step):
    model.train()
    rank = du.get_rank()
    total, count = torch.zeros((), device=device), 0
    t0 = time.time()
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=args.amp):
            logits = model(batch)
        loss = masked_loss(logits.float(), batch.y, batch.y_mask, args.task_type, args.label_smoothing)

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.clip_grad > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(model)

        total += loss.detach()
        count += 1
        global_step += 1
        if global_step % args.log_every == 0:
            if rank == 0:
                writer.add_scalar("train/loss", loss.item(), global_step)  # ok: MLS306
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], global_step)
            else:
                time.sleep(0.25 * rank)  # ruleid: MLS307
    mean_loss = du.all_reduce_mean(total / max(count, 1)).item()
    logger.info("epoch %d: train loss %.4f (%.1fs, %d steps)", epoch, mean_loss, time.time() - t0, count)
    return mean_loss, global_step


def make_loader(view, args, shuffle, sampler=None):
    return DataLoader(view, batch_size=args.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=args.num_workers, collate_fn=collate_molecules, worker_init_fn=seed_worker,
                      pin_memory=torch.cuda.is_available(), persistent_workers=args.num_workers > 0)


def main() -> None:
    args = parse_args()
    device = du.setup_distributed()
    du.prepare_output_dir(args.output, args.resume)
    du.setup_logging(args.output)
    du.seed_everything(args.seed)
    du.configure_runtime_env(args)
    du.ensure_launcher_ssh(args.num_nodes)
    du.install_nvtx_ranges()
    du.report_run_start(args)
    ensure_dependencies()
    _handle_requeue(args)
    world = du.get_world_size()

    # ---------------- data ----------------
    if du.is_main_process():
        MoleculeDataset(args.data, args.smiles_col, args.tasks, args.cache_dir, args.descriptors)
    du.synchronize()
    dataset = MoleculeDataset(
        args.data, args.smiles_col, args.tasks, args.cache_dir, args.descriptors,
        atom_mask_prob=args.atom_mask_prob,
    )
    train_idx, valid_idx, test_idx = scaffold_split(
        dataset.smiles, args.split_sizes, balanced=args.split == "scaffold_balanced", seed=args.seed
    )
    if args.task_type == "classification":
        train_idx = ensure_task_coverage(train_idx, test_idx, dataset.targets, dataset.masks)

    mean = std = None
    if args.task_type == "regression":
        mean, std = dataset.fit_target_scaler(train_idx)
        dataset.apply_target_scaler(mean, std)

    train_view = SplitView(dataset, train_idx, training=True)
    sampler = DistributedBucketSampler(len(train_view), world, du.get_rank(), shuffle=True)
    train_loader = make_loader(train_view, args, shuffle=True, sampler=sampler)
    valid_loader = make_loader(SplitView(dataset, valid_idx), args, shuffle=False)
    test_loader = make_loader(SplitView(dataset, test_idx), args, shuffle=False)

    # ---------------- model ----------------
    desc_dim = dataset.descriptors.shape[1] if dataset.descriptors is not None else 0
    model = build_model(args, ATOM_FDIM, BOND_FDIM, len(dataset.tasks), desc_dim)
    if args.pretrained:
        load_pretrained_encoder(model, args.pretrained, os.path.join(args.cache_dir, "pretrained"))
    model.to(device)
    if world > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    lr = du.parse_scalar(args.lr, world_size=world, batch_size=args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=args.weight_decay)
    steps_per_epoch = len(train_loader)
    scheduler = du.WarmupCosineSchedule(
        optimizer, int(args.warmup_epochs * steps_per_epoch), args.epochs * steps_per_epoch
    )
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp and device.type == "cuda")
    ema = du.ModelEMA(model, args.ema_decay) if args.ema_decay > 0 else None
    writer = du.build_writer(os.path.join(args.output, "tb"))

    start_epoch, best_score = maybe_resume(args, model, optimizer, scheduler, scaler)
    validate = ValidationCallback(valid_loader, dataset.tasks, args.task_type, device, mean, std)
    test_eval = ValidationCallback(test_loader, dataset.tasks, args.task_type, device, mean, std)
    validate.on_fit_start()

    def checkpoint_state(epoch):
        return dict(
            model=du.unwrap(model).state_dict(), optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
            ema=ema.state_dict() if ema is not None else None, epoch=epoch, best_score=best_score,
            args=dict(vars(args)), tasks=dataset.tasks,
            split_indices={"train": train_idx, "valid": valid_idx, "test": test_idx},
            target_mean=mean.tolist() if mean is not None else None,
            target_std=std.tolist() if std is not None else None,
        )

    global_step = start_epoch * steps_per_epoch
    epochs_no_improve = 0
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        train_loss, global_step = train_one_epoch(
            model, train_loader, optimizer, scheduler, scaler, ema, args, epoch, writer, device, global_step
        )
        eval_model = ema.shadow if ema is not None else du.unwrap(model)
        val_results, val_summary = validate(eval_model)
        _, test_summary = test_eval(eval_model)
        score = _selection_score(test_summary, args.task_type)  # todoruleid: family 5 (missed)

        if du.is_main_process():
            writer.add_scalar("valid/score", val_summary["mean"], epoch)
            writer.add_scalar("test/score", test_summary["mean"], epoch)
            logger.info(
                "epoch %d: valid %s %.4f | test %.4f",
                epoch, val_summary["metric"], val_summary["mean"], test_summary["mean"],
            )

        is_best = score > best_score
        if is_best:
            best_score = score
            epochs_no_improve = 0
        else:
            epochs_no_improve += 1

        state = checkpoint_state(epoch)
        du.save_checkpoint(state, os.path.join(args.output, "last.pt"))
        du.save_checkpoint(state, os.path.join(args.output, f"epoch_{epoch:04d}.pt"))
        if is_best:
            du.save_checkpoint(state, os.path.join(args.output, "best.pt"))
        du.rotate_checkpoints(args.output, keep=max(args.keep_last, args.average_last))

        if epochs_no_improve >= args.patience:
            if du.is_main_process():
                logger.info("no improvement for %d epochs; stopping at epoch %d", args.patience, epoch)
                writer.close()
                os._exit(0)  # ruleid: MLS307
            break

    # ---------------- final evaluation ----------------
    du.synchronize()
    if du.is_main_process():
        final = du.unwrap(model)
        if args.average_last > 1:
            paths = sorted(glob.glob(os.path.join(args.output, "epoch_*.pt")))[-args.average_last:]
            final.load_state_dict(du.average_checkpoints(paths))
        else:
            final.load_state_dict(du.load_checkpoint(os.path.join(args.output, "best.pt"))["model"])
        split_results = {}
        for name, loader in (("valid", valid_loader), ("test", test_loader)):
            preds, ys, masks = predict(final, loader, device, args.task_type)
            split_results[name] = compute_task_metrics(preds, ys, masks, dataset.tasks, args.task_type, mean, std)
        path = write_report(args.output, split_results, args.task_type, {"best_score": best_score})
        logger.info("final report: %s", path)
        logger.info(json.dumps({s: summarize_metrics(r, args.task_type) for s, r in split_results.items()}))
        writer.close()
    du.cleanup_distributed()


if __name__ == "__main__":
    main()
