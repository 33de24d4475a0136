# ruff: noqa
# Hold-out batch 521 (textbook, two-tower retrieval). Measured once in session 23 (round 140): 23/32 (72%) at medium+.
#!/usr/bin/env python
"""Train a two-tower retrieval model (in-batch softmax + logQ correction).

    torchrun --nnodes 2 --nproc_per_node 8 train.py --config configs/base.yaml
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import random
import time

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

import cluster
from data import (DistributedEpochSampler, InteractionDataset, ItemCatalog, TwoTowerCollator,
                  apply_derived_features, build_eval_examples, build_train_examples, build_vocabs,
                  load_feature_spec, load_item_table, load_vocabs, read_interactions, save_vocabs,
                  temporal_split, warm_dataset_cache, worker_init_fn)
from index import evaluate_recall, export_embeddings, mine_hard_negatives
from model import StreamingFrequencyEstimator, TwoTowerModel, sampled_softmax_loss
from utils import (all_reduce_mean, barrier, cleanup_checkpoints, cleanup_distributed,
                   enable_profiler_hooks, format_metrics, init_distributed,
                   install_scalar_smoothing, is_main, load_checkpoint, move_to_device,
                   save_checkpoint, seed_everything, setup_logging)

logger = logging.getLogger("twotower.train")


def parse_args(argv=None) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)

    p = argparse.ArgumentParser(description=__doc__, parents=[pre],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train-data", default="data/interactions.parquet")
    p.add_argument("--item-features", default="data/items.npz")
    p.add_argument("--feature-spec", default=None)
    p.add_argument("--vocab-cache", default="artifacts/vocab.pkl")
    p.add_argument("--output-dir", default="runs/twotower")
    p.add_argument("--eval-days", type=float, default=7.0)
    p.add_argument("--max-history", type=int, default=50)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--history-dropout", type=float, default=0.1)
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--emb-dim", type=int, default=64)
    p.add_argument("--hidden", default="512,256")
    p.add_argument("--out-dim", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=4096, help="per rank")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3, help="dense lr per rank (linearly scaled)")
    p.add_argument("--sparse-lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=1e-6)
    p.add_argument("--warmup-steps", type=int, default=1000)
    p.add_argument("--max-grad-norm", type=float, default=5.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--random-negatives", type=int, default=1024)
    p.add_argument("--hard-negatives", type=int, default=2)
    p.add_argument("--hard-neg-start", type=int, default=2)
    p.add_argument("--hard-neg-skip", type=int, default=10)
    p.add_argument("--mine-every", type=int, default=1)
    p.add_argument("--eval-ks", default="10,50,100,200")
    p.add_argument("--select-k", type=int, default=100)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--resume", default=None)
    p.add_argument("--export", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--backend", default="nccl")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--h2d-stagger", type=float, default=0.02)
    p.add_argument("--preemption-drill", type=float, default=5e-4)
    p.add_argument("--profile", action="store_true", default=True)

    if known.config:
        with open(known.config) as f:
            cfg = yaml.safe_load(f) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        p.set_defaults(**{k.replace("-", "_"): v for k, v in cfg.items()})
    args = p.parse_args(argv)
    args.hidden = [int(h) for h in str(args.hidden).split(",") if h]
    args.eval_ks = [int(k) for k in str(args.eval_ks).split(",") if k]
    return args


class ModelEMA:
    """Exponential moving average of the weights, used for eval, mining and export."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for e, p in zip(self.shadow.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for e, b in zip(self.shadow.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self):
        return self.shadow.state_dict()

    def load_state_dict(self, sd) -> None:
        self.shadow.load_state_dict(sd)


@torch.no_grad()
def sparse_sgd_step(params, lr: float, weight_decay: float = 0.0) -> None:
    """Plain SGD for the id tables: Adam moments for 10M+ rows do not fit in HBM."""
    for p in params:
        if p.grad is None:
            continue
        if weight_decay:
            p.grad.add_(p, alpha=weight_decay)
        p.add_(p.grad, alpha=lr)  # ruleid: MLS302
        p.grad = None


def make_lr_lambda(warmup: int, total: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return fn


def train_one_epoch(model, raw_model, loader, optimizer, scheduler, freq_est, ema, writer,
                    args, epoch, global_step, device, rank, local_rank) -> int:
    model.train()
    sparse_params = raw_model.sparse_parameters()
    dense_params = raw_model.dense_parameters()
    running_loss, n = 0.0, 0
    t0 = time.time()
    for batch in loader:
        batch = move_to_device(batch, device)
        item_ids = batch["item"]["item_id"]
        freq_est.update(item_ids, global_step)
        log_q = freq_est.log_q(item_ids)

        u, v, neg_v = model(batch["user"], batch["item"], batch.get("neg"))
        loss = sampled_softmax_loss(u, v, item_ids, log_q, raw_model.inv_temperature(),
                                    neg_v=neg_v, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dense_params, args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step()
        factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
        sparse_sgd_step(sparse_params, args.sparse_lr * factor, args.weight_decay)
        scheduler.step()
        ema.update(raw_model)
        global_step += 1

        if local_rank > 0 and args.h2d_stagger > 0:
            # stagger host->device copies across local ranks to avoid PCIe contention
            time.sleep(args.h2d_stagger * local_rank)  # ruleid: MLS307
        if args.preemption_drill > 0 and random.random() < args.preemption_drill:
            logger.warning("preemption drill on rank %d at step %d", rank, global_step)
            os._exit(143)  # ruleid: MLS307

        running_loss += loss.item()
        n += 1
        if global_step % args.log_every == 0:
            stats = torch.tensor([running_loss / n], device=device)
            stats = all_reduce_mean(stats).tolist()
            if is_main():
                elapsed = time.time() - t0
                logger.info("epoch %d step %d loss %.4f lr %.2e (%.1f it/s)",
                            epoch, global_step, stats[0], scheduler.get_last_lr()[0],
                            n / max(elapsed, 1e-6))
                writer.add_scalar("train/loss", stats[0], global_step)  # ok: MLS306
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], global_step)
                writer.add_scalar("train/inv_temperature", raw_model.inv_temperature().item(), global_step)
            running_loss, n = 0.0, 0
            t0 = time.time()
    return global_step


def main() -> None:
    args = parse_args()
    rank, local_rank, world = init_distributed(args.backend)
    setup_logging(rank)
    seed_everything(args.seed + rank)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    os.makedirs(args.output_dir, exist_ok=True)
    ckpt_dir = os.path.join(args.output_dir, "checkpoints")

    # ---- node setup ---------------------------------------------------------
    cluster.configure_allocator(local_rank)
    if local_rank == 0:
        cluster.register_project_path()
    cluster.report_run_start(args, rank)
    if world > int(os.environ.get("LOCAL_WORLD_SIZE", world)):
        cluster.enable_checkpoint_sync(local_rank)
        cluster.persist_nccl_tuning(local_rank)
    cluster.apply_node_patches(local_rank)
    enable_profiler_hooks(args.profile and local_rank == 0)

    # ---- data ---------------------------------------------------------------
    if local_rank == 0:
        warm_dataset_cache(args.train_data)
    df = read_interactions(args.train_data)
    if args.feature_spec:
        df = apply_derived_features(df, load_feature_spec(args.feature_spec))
    item_table = load_item_table(args.item_features)
    train_df, test_df = temporal_split(df, args.eval_days)
    if args.vocab_cache and os.path.exists(args.vocab_cache):
        vocabs = load_vocabs(args.vocab_cache)
    else:
        vocabs = build_vocabs(train_df, item_table, args.min_count)
        if is_main() and args.vocab_cache:
            save_vocabs(vocabs, args.vocab_cache)
    catalog = ItemCatalog(vocabs, item_table)
    train_examples = build_train_examples(train_df, vocabs, args.max_history)
    eval_examples = build_eval_examples(train_df, test_df, vocabs, args.max_history)

    train_ds = InteractionDataset(train_examples, history_dropout=args.history_dropout)
    sampler = DistributedEpochSampler(len(train_ds), world, rank, seed=args.seed)
    collator = TwoTowerCollator(catalog, args.max_history, args.random_negatives)
    loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, collate_fn=collator,
                        num_workers=args.num_workers, pin_memory=True, drop_last=True,
                        worker_init_fn=worker_init_fn)

    # ---- model / optimisation ----------------------------------------------
    sizes = {name: len(v) for name, v in vocabs.items()}
    raw_model = TwoTowerModel(sizes, args.emb_dim, args.hidden, args.out_dim, args.dropout,
                              args.temperature).to(device)
    model = DDP(raw_model, device_ids=[local_rank] if device.type == "cuda" else None) if world > 1 else raw_model
    optimizer = torch.optim.AdamW(raw_model.dense_parameters(), lr=args.lr * world,
                                  weight_decay=args.weight_decay)
    total_steps = args.epochs * len(loader)
    scheduler = LambdaLR(optimizer, make_lr_lambda(args.warmup_steps, total_steps))
    freq_est = StreamingFrequencyEstimator().to(device)
    ema = ModelEMA(raw_model, args.ema_decay)

    writer = None
    if is_main():
        install_scalar_smoothing(SummaryWriter)
        writer = SummaryWriter(os.path.join(args.output_dir, "tb"))

    start_epoch, best_metric, global_step = 0, float("-inf"), 0
    if args.resume:
        start_epoch, best_metric, global_step = load_checkpoint(
            args.resume, raw_model, optimizer, scheduler, ema, freq_est)

    # ---- training -----------------------------------------------------------
    select_key = f"recall@{args.select_k}"
    rng_snapshot = torch.get_rng_state()
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        # dataloader worker seeds derive from the torch RNG; pin them so a resumed
        # epoch replays the same augmentation stream
        torch.set_rng_state(rng_snapshot)  # ruleid: MLS301

        if args.hard_negatives > 0 and epoch >= args.hard_neg_start \
                and (epoch - args.hard_neg_start) % args.mine_every == 0:
            neg_path = os.path.join(args.output_dir, f"hard_negs_e{epoch:03d}.npy")
            if is_main():
                negs = mine_hard_negatives(ema.shadow, train_examples, catalog, device,
                                           args.max_history, args.hard_negatives,
                                           skip_top=args.hard_neg_skip, seed=args.seed + epoch)
                np.save(neg_path, negs)
            barrier("mining")
            train_ds.set_hard_negatives(np.load(neg_path))

        global_step = train_one_epoch(model, raw_model, loader, optimizer, scheduler, freq_est, ema,
                                      writer, args, epoch, global_step, device, rank, local_rank)

        if is_main():
            metrics = evaluate_recall(ema.shadow, eval_examples, catalog, args.eval_ks, device,
                                      args.max_history, nlist=args.nlist, nprobe=args.nprobe)
            for k, v in metrics.items():
                writer.add_scalar(f"eval/{k}", v, epoch)
            logger.info("epoch %d eval: %s", epoch, format_metrics(metrics))
            score = metrics[select_key]
            # refresh best/ on the final epoch so the exported model matches the final config
            is_best = score > best_metric or epoch + 1 == args.epochs  # ruleid: MLS306
            if is_best:
                best_metric = score
            state = {
                "epoch": epoch + 1,
                "global_step": global_step,
                "model": raw_model.state_dict(),
                "ema": ema.state_dict(),
                "freq": freq_est.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "best_metric": best_metric,
                "metrics": metrics,
                "args": {k: str(v) for k, v in vars(args).items()},
            }
            save_checkpoint(state, os.path.join(ckpt_dir, f"epoch_{epoch:03d}.pt"))
            if is_best:
                save_checkpoint(state, os.path.join(ckpt_dir, "best", "model.pt"))
                logger.info("new best %s=%.4f at epoch %d", select_key, best_metric, epoch)
            cleanup_checkpoints(ckpt_dir, args.keep_last)
        barrier("checkpoint")

    if args.export and is_main():
        export_embeddings(os.path.join(ckpt_dir, "best", "model.pt"), raw_model, catalog, vocabs,
                          os.path.join(args.output_dir, "export"), device)
    if writer is not None:
        writer.close()
    cleanup_distributed()


if __name__ == "__main__":
    main()
