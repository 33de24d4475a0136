# ruff: noqa
# Hold-out batch 448 (family-focused 1/6, two-tower recommendation with DDP). Measured once in session 19 (round 121): 13/30 (43%) at medium+.
"""Train the two-tower retrieval model on click logs with DDP.

    torchrun --nproc_per_node 8 train.py --log-glob '/data/clicks/2024-*/*.tsv' --out-dir runs/tt
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data.distributed import DistributedSampler

from callbacks import BestCheckpoint, CallbackList, EpochRNGGuard, HardNegativeMiner, unwrap
from data import (ITEM_FIELDS, OOV_ID, USER_FIELDS, CROSS_FIELDS, ClickCollator, ClickDataset,
                  DataConfig, EncodedClicks, NegativeSampler, StreamingClickDataset,
                  build_train_loader, prepare_data, write_shards)
from dist_utils import (DistInfo, barrier, capture_rng_state, cleanup_distributed, init_distributed,
                        latest_checkpoint, load_checkpoint, reduce_mean, restore_rng_state,
                        save_checkpoint, set_seed, setup_logging)
from evaluate import evaluate_retrieval, format_metrics, train_positives
from model import TowerConfig, TwoTower, enable_reproducible_dropout, retrieval_loss

logger = logging.getLogger("train")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--log-glob", required=True)
    g.add_argument("--cache-dir", default="/tmp/tt_cache")
    g.add_argument("--hash-buckets", type=int, default=1 << 20)
    g.add_argument("--max-hist", type=int, default=50)
    g.add_argument("--valid-days", type=float, default=2.0)
    g.add_argument("--gap-hours", type=float, default=6.0)
    g.add_argument("--min-item-count", type=int, default=5)
    g.add_argument("--streaming", action="store_true")
    g.add_argument("--sampling", choices=("uniform", "balanced"), default="uniform")
    g.add_argument("--num-workers", type=int, default=6)
    g.add_argument("--hist-dropout", type=float, default=0.1)
    g.add_argument("--local-default-item", default=None)
    g = p.add_argument_group("model")
    g.add_argument("--embed-dim", type=int, default=64)
    g.add_argument("--out-dim", type=int, default=64)
    g.add_argument("--dropout", type=float, default=0.1)
    g.add_argument("--temperature", type=float, default=0.05)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=4096, help="per rank")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--weight-decay", type=float, default=1e-5)
    g.add_argument("--warmup-steps", type=int, default=2000)
    g.add_argument("--grad-clip", type=float, default=1.0)
    g.add_argument("--label-smoothing", type=float, default=0.05)
    g.add_argument("--bpr-weight", type=float, default=0.1)
    g.add_argument("--shared-negs", type=int, default=1024)
    g.add_argument("--neg-alpha", type=float, default=0.75)
    g.add_argument("--hard-negs", type=int, default=8)
    g.add_argument("--mine-every", type=int, default=5000)
    g.add_argument("--mine-users", type=int, default=200_000)
    g.add_argument("--amp", action="store_true")
    g = p.add_argument_group("run")
    g.add_argument("--out-dir", required=True)
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--log-every", type=int, default=100)
    g.add_argument("--ckpt-every", type=int, default=10_000)
    g.add_argument("--keep-last", type=int, default=3)
    g.add_argument("--patience", type=int, default=4)
    g.add_argument("--no-resume", action="store_true")
    return p.parse_args(argv)


@dataclass
class TrainState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    dist: DistInfo
    global_step: int = 0
    epoch: int = 0


def last_row_per_user(data: EncodedClicks) -> EncodedClicks:
    order = np.lexsort((data.ts, data.user_idx))
    u = data.user_idx[order]
    last = order[np.r_[u[1:] != u[:-1], True]]
    return EncodedClicks(**{k: v[last] for k, v in data.__dict__.items()})


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "emb" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))


def warmup_cosine(warmup: int, total: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))
    return fn


def to_device(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def checkpoint_payload(state: TrainState, args) -> Dict[str, Any]:
    return {
        "model": unwrap(state.model).state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "epoch": state.epoch,
        "global_step": state.global_step,
        "rng": capture_rng_state(),
        "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))},
    }


def train_one_epoch(state: TrainState, loader, args, callbacks: CallbackList) -> float:
    model, device = state.model, state.dist.device
    model.train()
    amp_dtype = torch.bfloat16 if args.amp else torch.float32
    running, n_seen, t0 = 0.0, 0, time.time()
    for batch in loader:
        batch = to_device(batch, device)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=args.amp):
            out = model(batch)
            losses = retrieval_loss(out, batch, args.temperature, args.label_smoothing, args.bpr_weight)
        state.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        state.optimizer.step()
        state.scheduler.step()
        state.global_step += 1
        running += losses["loss"].item()
        n_seen += 1
        logs = {k: v.item() for k, v in losses.items()}
        if state.global_step % args.log_every == 0:
            loss = reduce_mean(running / n_seen, device)
            if state.dist.is_main:
                rate = n_seen * args.batch_size * state.dist.world_size / (time.time() - t0)
                logger.info("epoch %d step %d loss %.4f acc %.3f gnorm %.2f lr %.2e %.0f ex/s",
                            state.epoch, state.global_step, loss, logs["in_batch_acc"], grad_norm,
                            state.scheduler.get_last_lr()[0], rate)
        callbacks.on_step_end(state, state.global_step, logs)
        if state.global_step % args.ckpt_every == 0:
            if state.dist.is_main:
                save_checkpoint(os.path.join(args.out_dir, f"ckpt-{state.global_step}.pt"),
                                checkpoint_payload(state, args), keep_last=args.keep_last)
            torch.cuda.manual_seed(args.seed + state.epoch)  # ruleid: MLS301
    return running / max(1, n_seen)


def main(argv=None) -> None:
    args = parse_args(argv)
    dist_info = init_distributed()
    setup_logging(dist_info.rank)
    set_seed(args.seed, dist_info.rank)
    os.makedirs(args.out_dir, exist_ok=True)
    if dist_info.is_main:
        with open(os.path.join(args.out_dir, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=2)

    data_cfg = DataConfig(log_glob=args.log_glob, cache_dir=args.cache_dir, hash_buckets=args.hash_buckets,
                          max_hist=args.max_hist, valid_days=args.valid_days, gap_hours=args.gap_hours,
                          min_item_count=args.min_item_count)
    data = prepare_data(data_cfg)
    vocab = data.vocab
    logger.info("train %d rows, valid %d rows, %d items", len(data.train), len(data.valid), vocab.num_items)

    if args.streaming:
        shard_dir = os.path.join(args.cache_dir, "train_shards")
        if dist_info.is_main:
            write_shards(data.train, shard_dir)
        barrier()
        train_ds = StreamingClickDataset(shard_dir, dist_info.rank, dist_info.world_size, args.seed,
                                         vocab.num_items, target_noise=data_cfg.target_noise)
    else:
        default_item = vocab.item.get(args.local_default_item, OOV_ID) if args.local_default_item else OOV_ID
        train_ds = ClickDataset(data.train, data_cfg, local_default_item=default_item)

    freq = data.item_counts / max(1.0, data.item_counts.sum())
    item_log_q = torch.log(torch.as_tensor(freq, dtype=torch.float32).clamp_min(1e-9))
    neg_sampler = NegativeSampler(data.item_counts, alpha=args.neg_alpha, seed=args.seed)
    hard_table = None
    if args.hard_negs > 0:
        hard_table = torch.zeros((vocab.num_users, args.hard_negs), dtype=torch.long).share_memory_()
    collator = ClickCollator(data.item_table, item_log_q, neg_sampler, args.shared_negs,
                             args.hist_dropout, hard_table)
    loader, train_sampler = build_train_loader(train_ds, collator, args.batch_size, args.num_workers,
                                               dist_info.rank, dist_info.world_size, args.seed, args.sampling)

    tower_cfg = TowerConfig(num_users=vocab.num_users, num_items=vocab.num_items,
                            hash_buckets=args.hash_buckets,
                            num_user_fields=len(USER_FIELDS) + len(CROSS_FIELDS),
                            num_item_fields=len(ITEM_FIELDS), embed_dim=args.embed_dim,
                            out_dim=args.out_dim, dropout=args.dropout, temperature=args.temperature,
                            init_seed=args.seed)
    model = TwoTower(tower_cfg).to(dist_info.device)
    n_hooks = enable_reproducible_dropout(model, args.seed)
    logger.info("model: %.1fM params, %d dropout hooks",
                sum(p.numel() for p in model.parameters()) / 1e6, n_hooks)
    if dist_info.enabled:
        ids = [dist_info.local_rank] if dist_info.device.type == "cuda" else None
        model = DDP(model, device_ids=ids, find_unused_parameters=False)

    optimizer = build_optimizer(model, args.lr, args.weight_decay)
    steps_per_epoch = max(1, len(data.train) // (args.batch_size * dist_info.world_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(args.warmup_steps, steps_per_epoch * args.epochs))
    state = TrainState(model, optimizer, scheduler, dist_info)

    start_epoch = 0
    ckpt_path = None if args.no_resume else latest_checkpoint(args.out_dir)
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path, dist_info.device)
        unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state.global_step, start_epoch = ckpt["global_step"], ckpt["epoch"]
        restore_rng_state(ckpt["rng"])
        # the pre-crash stream is already consumed; continue from a fresh one
        torch.manual_seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
        logger.info("resumed from %s (epoch %d, step %d)", ckpt_path, start_epoch, state.global_step)

    seen = train_positives(data.train)
    callbacks = [EpochRNGGuard()]
    if hard_table is not None:
        callbacks.append(HardNegativeMiner(hard_table, last_row_per_user(data.train), seen, data.item_table,
                                           args.mine_every, args.mine_users, dist_info.device, seed=args.seed))
    best = BestCheckpoint(args.out_dir, monitor="recall@100", patience=args.patience)
    callbacks.append(best)
    callbacks = CallbackList(callbacks)
    callbacks.on_train_start(state)

    devices = [dist_info.device] if dist_info.device.type == "cuda" else []
    for epoch in range(start_epoch, args.epochs):
        state.epoch = epoch
        if isinstance(train_sampler, DistributedSampler):
            train_sampler.set_epoch(start_epoch)  # ruleid: MLS301
        elif isinstance(train_ds, StreamingClickDataset):
            train_ds.set_epoch(epoch)  # ok: MLS301
        callbacks.on_epoch_start(state, epoch)
        with torch.random.fork_rng(devices=devices):  # todoruleid: family 1 (missed)
            train_loss = train_one_epoch(state, loader, args, callbacks)
        metrics = evaluate_retrieval(unwrap(model), data.valid, data.item_table, seen, dist_info)
        metrics["train_loss"] = train_loss
        if dist_info.is_main:
            logger.info("epoch %d: %s", epoch, format_metrics(metrics))
            with open(os.path.join(args.out_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps({"epoch": epoch, "step": state.global_step, **metrics}) + "\n")
        callbacks.on_eval_end(state, metrics)
        state.epoch = epoch + 1
        if dist_info.is_main:
            save_checkpoint(os.path.join(args.out_dir, f"ckpt-{state.global_step}.pt"),
                            checkpoint_payload(state, args), keep_last=args.keep_last)
        barrier()
        if best.should_stop:
            logger.info("early stopping after epoch %d", epoch)
            break

    callbacks.on_train_end(state)
    cleanup_distributed()


if __name__ == "__main__":
    main()
