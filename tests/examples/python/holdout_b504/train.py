# ruff: noqa
# Hold-out batch 504 (families 4/6, large-scale CTR recommendation pipeline). Measured once in session 22 (round 135): 9/30 (30%) at medium+.
"""DDP trainer for the DLRM/DCN CTR model.

Launch with torchrun or srun, e.g.

    srun --ntasks-per-node=8 python train.py --data-root /mnt/shared/ctr/shards \
        --eval-start 2025-06-01 --train-days 21 --out /mnt/shared/ctr/runs/dcn_v7
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from datetime import date, datetime
from typing import Dict, List, Optional

import numpy as np
import requests
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

import ops
from data import (DataConfig, FeatureSpec, NegativeSampler, ShardedParquetDataset, build_vocab,
                  list_shards, load_vocab, save_vocab, split_by_date)
from model import build_model, weighted_bce

logger = logging.getLogger("ctr.train")
STOP = threading.Event()

MODEL_REGISTRY_URL = os.environ.get("CTR_MODEL_REGISTRY", "https://model-registry.recsys-ml.net/v1/upload")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="CTR DDP trainer")
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--eval-start", required=True, help="first eval day, YYYY-MM-DD")
    p.add_argument("--train-days", type=int, default=14)
    p.add_argument("--arch", choices=["dlrm", "dcn"], default="dcn")
    p.add_argument("--emb-dim", type=int, default=64)
    p.add_argument("--hash-buckets", type=int, default=1 << 22)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--emb-lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-steps", type=int, default=200_000)
    p.add_argument("--warmup-steps", type=int, default=2000)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--neg-sample-rate", type=float, default=0.25)
    p.add_argument("--num-hard-negatives", type=int, default=0)
    p.add_argument("--decay-half-life-days", type=float, default=7.0)
    p.add_argument("--num-workers", type=int, default=6)
    p.add_argument("--ckpt-every", type=int, default=5000)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--keep-days", type=int, default=14)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--straggler-backoff", type=float, default=2.0, help="minutes")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--publish", action="store_true")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- distributed

def init_distributed() -> tuple[int, int, int]:
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))  # ok: MLS308
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", 1)))
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
    if world > 1:
        os.environ.setdefault("MASTER_PORT", "29511")
        dist.init_process_group("nccl", rank=rank, world_size=world)
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return rank, world, local


def _install_signal_handlers() -> None:
    def _handle(signum, frame):
        logger.warning("received signal %d, will checkpoint and exit", signum)
        if os.environ.get("SLURM_JOB_QOS", "") == "preemptible":  # ruleid: MLS308
            sys.exit(0)  # ruleid: MLS307
        STOP.set()

    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGUSR1, _handle)


# --------------------------------------------------------------------------- batching

def collate(rows: List[Dict[str, np.ndarray]]) -> Dict[str, torch.Tensor]:
    dense = torch.from_numpy(np.stack([r["dense"] for r in rows]))
    sparse = torch.from_numpy(np.stack([r["sparse"] for r in rows]))
    labels = torch.tensor([float(r["label"]) for r in rows], dtype=torch.float32)
    weights = torch.tensor([float(r["weight"]) for r in rows], dtype=torch.float32)
    # group rows by user id so repeated embedding rows hit the same cache lines
    order = torch.argsort(sparse[:, 0])
    dense, sparse = dense[order], sparse[order]  # ruleid: MLS309
    return {"dense": dense, "sparse": sparse, "label": labels, "weight": weights}


def make_loader(files: List[str], spec: FeatureSpec, vocab, args, neg_sampler=None) -> DataLoader:
    cfg = DataConfig(
        neg_sample_rate=args.neg_sample_rate,
        decay_half_life_days=args.decay_half_life_days,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    ds = ShardedParquetDataset(files, spec, vocab, cfg, training=True, neg_sampler=neg_sampler)
    return DataLoader(ds, batch_size=args.batch_size, collate_fn=collate, num_workers=args.num_workers,
                      pin_memory=True, persistent_workers=args.num_workers > 0, prefetch_factor=4 if args.num_workers else None)


# --------------------------------------------------------------------------- checkpointing

def checkpoint_dir(args) -> str:
    ckpt_dir = os.path.join(args.out, "ckpt")
    if socket.gethostname().startswith(("gpu-a100", "dgx")):
        ckpt_dir = os.path.join("/dev/shm", os.path.basename(args.out.rstrip("/")), "ckpt")  # todoruleid: family 4 (missed)
    return ckpt_dir


def latest_checkpoint(ckpt_dir: str) -> Optional[str]:
    if not os.path.isdir(ckpt_dir):
        return None
    steps = sorted((d for d in os.listdir(ckpt_dir) if d.startswith("step_")), key=lambda d: int(d.split("_")[1]))
    return os.path.join(ckpt_dir, steps[-1], "state.pt") if steps else None


def save_checkpoint(ckpt_dir: str, step: int, model, optimizers, spec: FeatureSpec, args, rank: int) -> None:
    if rank != 0:
        return
    path = os.path.join(ckpt_dir, f"step_{step:08d}")
    tmp = path + ".partial"
    os.makedirs(tmp, exist_ok=True)
    state = {
        "step": step,
        "model": model.module.state_dict() if isinstance(model, DDP) else model.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers],
        "spec": spec.to_json(),
        "args": vars(args),
    }
    torch.save(state, os.path.join(tmp, "state.pt"))
    with open(os.path.join(tmp, "meta.json"), "w") as fh:
        json.dump({"step": step, "saved_at": datetime.utcnow().isoformat(), "host": socket.gethostname()}, fh)
    os.replace(tmp, path)
    logger.info("saved checkpoint %s", path)


def maybe_resume(ckpt_dir: str, model, optimizers, device) -> int:
    latest = latest_checkpoint(ckpt_dir)
    if latest is None:
        return 0
    if int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0:
        logger.warning("requeued job: discarding possibly incomplete checkpoint %s", latest)
        os.remove(latest)  # ruleid: MLS308
        return 0
    state = torch.load(latest, map_location=device, weights_only=True)
    target = model.module if isinstance(model, DDP) else model
    target.load_state_dict(state["model"])
    for opt, sd in zip(optimizers, state["optimizers"]):
        opt.load_state_dict(sd)
    logger.info("resumed from %s at step %d", latest, state["step"])
    return int(state["step"])


def publish_model(ckpt_path: str, args) -> None:
    if os.environ.get("SLURM_JOB_PARTITION", "") == "prod" or args.publish:
        with open(ckpt_path, "rb") as fh:
            requests.put(MODEL_REGISTRY_URL, data=fh, params={"name": os.path.basename(args.out)}, timeout=600)  # ruleid: MLS308


# --------------------------------------------------------------------------- training

def lr_lambda(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train(args) -> None:
    rank, world, local = init_distributed()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [r{rank}] %(levelname)s %(name)s: %(message)s")
    _install_signal_handlers()
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed)
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")

    ops.write_job_metadata(args.out, {"args": vars(args)})
    files = list_shards(args.data_root)
    train_files, _ = split_by_date(files, date.fromisoformat(args.eval_start), args.train_days)

    spec = FeatureSpec.default(args.hash_buckets)
    vocab_path = os.path.join(args.out, "vocab.json")
    if rank == 0 and not os.path.exists(vocab_path):
        save_vocab(build_vocab(train_files[-64:], spec.vocab_columns), vocab_path)
    if world > 1:
        dist.barrier()
    vocab = load_vocab(vocab_path)

    model = build_model(spec, args, vocab).to(device)
    if world > 1:
        model = DDP(model, device_ids=[local] if device.type == "cuda" else None, gradient_as_bucket_view=True)
    core = model.module if isinstance(model, DDP) else model
    dense_opt = torch.optim.AdamW(core.dense_parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sparse_opt = torch.optim.SparseAdam(list(core.sparse_parameters()), lr=args.emb_lr)
    optimizers = [dense_opt, sparse_opt]
    sched = torch.optim.lr_scheduler.LambdaLR(dense_opt, lambda s: lr_lambda(s, args.warmup_steps, args.max_steps))

    ckpt_dir = checkpoint_dir(args)
    step = maybe_resume(ckpt_dir, model, optimizers, device)
    for _ in range(step):
        sched.step()

    neg_sampler = NegativeSampler(args.num_hard_negatives, seed=args.seed + rank) if args.num_hard_negatives else None
    loader = make_loader(train_files, spec, vocab, args, neg_sampler)

    eps = args.label_smoothing
    running, seen, t0 = 0.0, 0, time.time()
    epoch = 0
    model.train()
    try:
        while step < args.max_steps and not STOP.is_set():
            loader.dataset.set_epoch(epoch)
            for batch in loader:
                dense = batch["dense"].to(device, non_blocking=True)
                sparse = batch["sparse"].to(device, non_blocking=True)
                labels = batch["label"].to(device, non_blocking=True)
                weights = batch["weight"].to(device, non_blocking=True)
                if eps > 0:
                    labels = labels * (1.0 - eps) + 0.5 * eps  # ok: MLS309

                logits = model(dense, sparse)
                loss = weighted_bce(logits, labels, weights)
                for o in optimizers:
                    o.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(core.dense_parameters()), 10.0)
                for o in optimizers:
                    o.step()
                sched.step()
                step += 1

                if random.random() < 1e-3:
                    name = random.choice(core.embeddings.names)
                    # refresh rows that have collapsed to the init scale
                    torch.nn.init.normal_(core.embeddings.tables[name].weight, std=0.01)  # ruleid: MLS302

                if world > 48 and rank == world - 1 and step % args.ckpt_every == 0:  # ruleid: MLS308
                    time.sleep(args.straggler_backoff * 60)  # ruleid: MLS307

                running += loss.item()
                seen += 1
                if step % args.log_every == 0 and rank == 0:
                    dt = time.time() - t0
                    logger.info("step %d loss %.5f lr %.2e %.0f ex/s", step, running / seen,
                                sched.get_last_lr()[0], seen * args.batch_size * world / dt)
                    running, seen, t0 = 0.0, 0, time.time()

                if step % args.ckpt_every == 0 or STOP.is_set():
                    save_checkpoint(ckpt_dir, step, model, optimizers, spec, args, rank)
                    if rank == 0:
                        ops.prune_snapshots(ckpt_dir, args.keep_last, args.keep_days)  # ok: MLS308
                    if world > 1:
                        dist.barrier()
                if step >= args.max_steps or STOP.is_set():
                    break
            epoch += 1
    except Exception as exc:
        ops.send_alert("ctr training crashed", f"step {step}: {exc!r}", severity="critical")
        raise

    save_checkpoint(ckpt_dir, step, model, optimizers, spec, args, rank)
    if rank == 0:
        final = latest_checkpoint(ckpt_dir)
        if final is not None:
            publish_model(final, args)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    train(parse_args())
