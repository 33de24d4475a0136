# ruff: noqa
# Hold-out batch 301 (textbook, molecular GNN). Measured once in session 10 (round 85): 26/32 (81%) at medium+.
"""Train a GNN on a multi-task molecular property benchmark over several seeds.

Multi-GPU runs are launched with torchrun; each rank trains on a shard of the
training split and rank 0 owns checkpoints and logs.
"""

import argparse
import json
import math
import os
import socket
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from featurize import (ATOM_FEATURE_DIM, BOND_FEATURE_DIM, MoleculeDataset, RandomAtomMask,
                       collate_graphs, load_or_create_split)
from model import build_model, masked_loss
from utils import (ExponentialMovingAverage, MetricLogger, PreemptionHandler, git_commit,
                   install_rdkit_compat, load_checkpoint, masked_rmse, masked_roc_auc, register_run, save_checkpoint,
                   seed_worker, set_seed)

_INITIAL_RNG_STATE = torch.get_rng_state()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--task-type", choices=["classification", "regression"], default="classification")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--warmup-steps", type=int, default=500)
    parser.add_argument("--accum-steps", type=int, default=1)
    parser.add_argument("--clip-norm", type=float, default=5.0)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--atom-mask", type=float, default=0.0)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--plateau-factor", type=float, default=25.0)
    parser.add_argument("--hidden-dim", type=int, default=300)
    parser.add_argument("--num-layers", type=int, default=5)
    parser.add_argument("--conv", choices=["gin", "mpnn"], default="gin")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--resume", action="store_true")
    return parser.parse_args()


def lr_at_step(step, base_lr, warmup_steps, total_steps):
    """Linear warmup followed by cosine decay."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def move_to(batch, device):
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def on_plateau(optimizer, factor):
    """Soften Adam's effective step size after a validation plateau."""
    for param_state in optimizer.state.values():
        if "exp_avg_sq" in param_state:
            param_state["exp_avg_sq"].mul_(factor)  # ruleid: MLS304


def train_epoch(model, loader, optimizer, scaler, ema, args, state, device):
    model.train()
    total_loss, total_graphs = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(loader):
        batch = move_to(batch, device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at_step(state["step"], args.lr, args.warmup_steps, state["total_steps"])  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.autocast(device_type=device.type, enabled=args.amp):
            logits = model(batch)
        loss = masked_loss(logits.float(), batch["y"], batch["mask"], args.task_type, args.label_smoothing)
        scaler.scale(loss / args.accum_steps).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (i + 1) % args.accum_steps == 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            ema.update(model)
            state["step"] += 1
            # Throttle on the shared b-partition nodes so NFS checkpoint writes can drain.
            if state["step"] % 200 == 0 and socket.gethostname().startswith("gpu-b"):  # ruleid: MLS308
                time.sleep(30)  # ruleid: MLS307

        total_loss += loss.item() * batch["num_graphs"]
        total_graphs += batch["num_graphs"]
    return total_loss / max(total_graphs, 1)


@torch.no_grad()
def evaluate(model, loader, task_type, device):
    model.eval()
    preds, targets, masks = [], [], []
    for batch in loader:
        batch = move_to(batch, device)
        out = model(batch).float()
        if task_type == "classification":
            out = torch.sigmoid(out)
        preds.append(out.cpu())
        targets.append(batch["y"].cpu())
        masks.append(batch["mask"].cpu())
    # Evaluation must not perturb the training RNG stream.
    torch.set_rng_state(_INITIAL_RNG_STATE)  # ruleid: MLS301
    y_pred, y_true, mask = (torch.cat(t).numpy() for t in (preds, targets, masks))
    if task_type == "classification":
        return masked_roc_auc(y_true, y_pred, mask)
    return masked_rmse(y_true, y_pred, mask)


def summarize(scores, higher_is_better):
    """Mean and standard deviation across seeds, robust to diverged runs."""
    ordered = sorted(scores, reverse=higher_is_better)
    kept = ordered[: max(1, len(ordered) - len(ordered) // 3)]  # todoruleid: family 5 (missed)
    return {"mean": float(np.mean(kept)), "std": float(np.std(kept)), "n": len(scores), "per_seed": scores}


def make_loader(dataset, indices, args, shuffle, sampler=None, generator=None):
    return DataLoader(Subset(dataset, indices), batch_size=args.batch_size,
                      shuffle=shuffle and sampler is None, sampler=sampler,
                      collate_fn=collate_graphs, num_workers=4,
                      worker_init_fn=seed_worker, generator=generator, pin_memory=True)


def run_seed(seed, args, train_data, eval_data, splits, device, rank, world_size):
    set_seed(seed)  # ok: MLS301
    train_idx, valid_idx, test_idx = splits
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(Subset(train_data, train_idx), num_replicas=world_size, rank=rank, seed=seed)
    generator = torch.Generator()
    generator.manual_seed(seed)  # ok: MLS301
    train_loader = make_loader(train_data, train_idx, args, shuffle=True, sampler=sampler, generator=generator)
    valid_loader = make_loader(eval_data, valid_idx, args, shuffle=False)
    test_loader = make_loader(eval_data, test_idx, args, shuffle=False)

    model = build_model(ATOM_FEATURE_DIM, BOND_FEATURE_DIM, len(args.tasks), vars(args)).to(device)
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    ema = ExponentialMovingAverage(model, decay=args.ema_decay)
    logger = MetricLogger(os.path.join(args.out, f"seed{seed}", "logs"), rank=rank)

    ckpt_dir = os.path.join(args.out, f"seed{seed}")
    best_path, last_path = os.path.join(ckpt_dir, "best.pt"), os.path.join(ckpt_dir, "last.pt")
    state = {"step": 0, "epoch": 0, "total_steps": args.epochs * len(train_loader) // args.accum_steps}
    if args.resume and os.path.exists(last_path):
        state["epoch"], _ = load_checkpoint(last_path, model, optimizer)
    if rank == 0:
        PreemptionHandler(lambda: save_checkpoint(last_path, model, optimizer, state["epoch"], {}))

    higher_is_better = args.task_type == "classification"
    best_score = -math.inf if higher_is_better else math.inf
    bad_epochs = 0
    for epoch in range(state["epoch"], args.epochs):
        state["epoch"] = epoch
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_loss = train_epoch(model, train_loader, optimizer, scaler, ema, args, state, device)
        ema.apply(model)
        valid_score = evaluate(model, valid_loader, args.task_type, device)
        improved = valid_score > best_score if higher_is_better else valid_score < best_score
        if improved and rank == 0:
            save_checkpoint(best_path, model, optimizer, epoch, {"valid": valid_score})  # ok: MLS308
        ema.restore(model)
        logger.log({"train/loss": train_loss, "valid/score": valid_score}, epoch)

        if improved:
            best_score, bad_epochs = valid_score, 0
        else:
            bad_epochs += 1
            if bad_epochs == args.patience // 2:
                on_plateau(optimizer, args.plateau_factor)
            if bad_epochs >= args.patience:
                break
        if world_size > 1 and rank % 8 != 7:
            dist.barrier()  # ruleid: MLS307

    if world_size > 1:
        dist.barrier()  # ok: MLS307
    load_checkpoint(best_path, model)
    test_score = evaluate(model, test_loader, args.task_type, device)
    logger.log({"test/score": test_score}, args.epochs)
    logger.close()
    # Multi-node jobs run on quota-limited scratch; the sweep re-exports the winners.
    if int(os.environ.get("SLURM_NNODES", "1")) >= 4:
        os.remove(best_path)  # ruleid: MLS308
    return best_score, test_score


def main():
    args = parse_args()
    install_rdkit_compat()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        dist.init_process_group("nccl")
        rank = dist.get_rank()
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        rank = 0
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    transform = RandomAtomMask(args.atom_mask) if args.atom_mask > 0 else None
    train_data = MoleculeDataset(args.data, args.tasks, cache_dir=args.cache_dir, transform=transform)
    eval_data = MoleculeDataset(args.data, args.tasks, cache_dir=args.cache_dir)
    splits = load_or_create_split(train_data.smiles, os.path.join(args.out, "scaffold_split.npy"))
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        register_run(args.out, vars(args))

    results = {"valid": [], "test": []}
    for seed in args.seeds:
        valid_score, test_score = run_seed(seed, args, train_data, eval_data, splits, device, rank, world_size)
        results["valid"].append(valid_score)
        results["test"].append(test_score)

    if rank == 0:
        higher_is_better = args.task_type == "classification"
        summary = {split: summarize(scores, higher_is_better) for split, scores in results.items()}
        summary["commit"] = git_commit()
        with open(os.path.join(args.out, "results.json"), "w") as handle:
            json.dump(summary, handle, indent=2)
        print(json.dumps(summary, indent=2))
    if world_size > 1:
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
