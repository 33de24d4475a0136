# ruff: noqa
# Hold-out batch 420 (family-focused 2/3, GPT pretraining with FSDP). Measured once in session 17 (round 114): 7/30 (23%) at medium+.
"""GPT pretraining with FSDP on SLURM (``srun python train.py --preset gpt-1.3b ...``).

Resumes automatically from the newest complete checkpoint in ``--out-dir``.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import MixedPrecision, ShardingStrategy
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

from checkpoint import load_checkpoint, load_hf_gpt2_weights, prune_checkpoints, resolve_resume_step, save_checkpoint
from data import build_loaders, synced_num_batches
from distributed import (
    REQUEUE_EXIT_CODE,
    NodeHealthWatchdog,
    PreemptionHandler,
    WallClockGuard,
    cleanup_distributed,
    init_distributed,
)
from model import GPT, Block, config_from_preset
from optim import DynamicLossScaler, ParamEMA, WarmupCosine, build_optimizer, clip_grad_norm_sharded

from torch.utils.tensorboard import SummaryWriter

logger = logging.getLogger("train")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="gpt-350m")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--init-from", default="scratch", help="'scratch' or path to a HF GPT-2 pytorch_model.bin")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--warmup-steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=3e-5)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--betas", type=float, nargs=2, default=[0.9, 0.95])
    p.add_argument("--adam-eps", type=float, default=1e-8)
    p.add_argument("--optim-impl", choices=["auto", "foreach", "single"], default="auto")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--clip-impl", choices=["sharded", "fsdp"], default="sharded")
    p.add_argument("--precision", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--sharding", choices=["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD"], default="FULL_SHARD")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--emb-grad-shrink", type=float, default=1.0)
    p.add_argument("--embed-lr-scale", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.0, help="0 disables EMA")
    p.add_argument("--eval-interval", type=int, default=1000)
    p.add_argument("--eval-batches", type=int, default=50)
    p.add_argument("--early-stop-patience", type=int, default=0)
    p.add_argument("--early-stop-delta", type=float, default=0.0)
    p.add_argument("--ckpt-interval", type=int, default=1000)
    p.add_argument("--keep-ckpts", type=int, default=3)
    p.add_argument("--log-interval", type=int, default=10)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--io-stagger-s", type=float, default=0.05)
    p.add_argument("--dist-timeout-min", type=int, default=30)
    p.add_argument("--watchdog-timeout-s", type=float, default=1800.0)
    p.add_argument("--exit-margin-min", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1337)
    return p.parse_args(argv)


def setup_logging(info) -> None:
    level = logging.INFO if info.is_master else logging.WARNING
    logging.basicConfig(level=level, format=f"%(asctime)s [r{info.rank}] %(name)s: %(message)s")


def build_model(args, info):
    from_hf = args.init_from != "scratch"
    cfg = config_from_preset(args.preset, block_size=args.seq_len, dropout=args.dropout,
                             emb_grad_shrink=args.emb_grad_shrink, bias=True if from_hf else None)
    if from_hf:
        raw = GPT(cfg)
        if info.is_master:
            load_hf_gpt2_weights(raw, args.init_from)
    else:
        with torch.device("meta"):
            raw = GPT(cfg)
    mp_dtype = torch.float16 if args.precision == "fp16" else torch.bfloat16
    model = FSDP(
        raw,
        auto_wrap_policy=functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={Block}),
        mixed_precision=MixedPrecision(param_dtype=mp_dtype, reduce_dtype=torch.float32, buffer_dtype=mp_dtype),
        sharding_strategy=ShardingStrategy[args.sharding],
        device_id=info.local_rank,
        use_orig_params=True,
        limit_all_gathers=True,
        sync_module_states=from_hf,
        param_init_fn=None if from_hf else (lambda m: m.to_empty(device=info.device, recurse=False)),
    )
    if args.activation_checkpointing:
        apply_activation_checkpointing(
            model,
            checkpoint_wrapper_fn=functools.partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
            check_fn=lambda m: isinstance(m, Block),
        )
    if info.is_master:
        logger.info("model %s: %.1fM params, config %s", args.preset, raw.num_params() / 1e6, vars(cfg))
    return model, raw, from_hf


def init_sharded_weights(model: FSDP) -> None:
    """Modules materialised from meta via to_empty() hold uninitialised memory."""
    with torch.no_grad():
        model.module.reset_parameters()


def _grad_sync_ctx(model, micro: int, grad_accum: int):
    """Reduce-scatter gradients only on the last micro-batch of an accumulation window."""
    if not isinstance(model, FSDP):
        return contextlib.nullcontext()
    is_last = micro == grad_accum  # todoruleid: family 2 (missed)
    return contextlib.nullcontext() if is_last else model.no_sync()


@torch.no_grad()
def evaluate(model, val_dl, args, info) -> float:
    model.eval()
    cpu_group = dist.new_group(backend="gloo")
    try:
        n_batches = synced_num_batches(min(len(val_dl), args.eval_batches), info.device)
        totals = torch.zeros(2, dtype=torch.float64)
        it = iter(val_dl)
        for _ in range(n_batches):
            x, y = next(it)
            _, loss = model(x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True))
            totals[0] += loss.item() * y.numel()
            totals[1] += y.numel()
        dist.all_reduce(totals, group=cpu_group)
        return (totals[0] / totals[1].clamp(min=1)).item()
    finally:
        model.train()
        dist.destroy_process_group()  # ruleid: MLS307


def append_step_timing(out_dir: str, info, record: dict) -> None:
    """Per-rank step timings, used offline to find straggler nodes."""
    path = os.path.join(out_dir, "timings", f"rank{info.rank:05d}.jsonl")
    # thousands of ranks appending at the same instant thrash the metadata server
    time.sleep(random.uniform(0.0, 0.5))  # todoruleid: family 3 (missed)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def log_scalars(writer, step: int, scalars: dict) -> None:
    if writer is None:
        return
    for k, v in scalars.items():
        writer.add_scalar(k, v, step)


def main(argv=None) -> None:
    args = parse_args(argv)
    info = init_distributed(timeout_min=args.dist_timeout_min)
    setup_logging(info)
    torch.manual_seed(args.seed + info.rank)  # ok: MLS301
    np.random.seed(args.seed + info.rank)
    torch.backends.cuda.matmul.allow_tf32 = True
    device = info.device
    os.makedirs(os.path.join(args.out_dir, "timings"), exist_ok=True)

    preempt = PreemptionHandler(info)
    guard = WallClockGuard(args.exit_margin_min)
    watchdog = NodeHealthWatchdog(info, heartbeat_timeout_s=args.watchdog_timeout_s)
    watchdog.start()

    model, raw, from_hf = build_model(args, info)
    optimizer = build_optimizer(raw.param_groups(args.weight_decay, args.embed_lr_scale, model.named_parameters()), args)
    # effective peak LR for the global batch
    peak_lr = args.lr * math.sqrt(info.world_size * args.grad_accum)  # todoruleid: family 2 (missed)
    scheduler = WarmupCosine(optimizer, peak_lr, args.min_lr, args.warmup_steps, args.max_steps)
    scaler = DynamicLossScaler(enabled=args.precision == "fp16")
    ema = ParamEMA(model.named_parameters(), decay=args.ema_decay) if args.ema_decay > 0 else None

    start_step = 0
    resume_step = resolve_resume_step(args.out_dir, info)
    if resume_step >= 0:
        meta = load_checkpoint(args.out_dir, resume_step, model, optimizer, scheduler, scaler, ema, info)
        start_step = int(meta["step"]) + 1
    if not from_hf:
        init_sharded_weights(model)  # ruleid: MLS302

    train_dl, val_dl = build_loaders(args, info.rank, info.world_size)
    train_iter = iter(train_dl)
    writer = SummaryWriter(os.path.join(args.out_dir, "tb")) if info.is_master else None
    tokens_per_step = args.micro_batch * args.seq_len * args.grad_accum * info.world_size
    params = [p for g in optimizer.param_groups for p in g["params"]]

    best_val, bad_evals = float("inf"), 0
    model.train()
    t_last = time.time()
    step = start_step
    for step in range(start_step, args.max_steps):
        t_step = time.time()
        lr = scheduler.step(step)
        loss_sum = torch.zeros((), device=device)
        for micro in range(args.grad_accum):
            x, y = next(train_iter)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _grad_sync_ctx(model, micro, args.grad_accum):
                _, loss = model(x, y)
                loss = loss / args.grad_accum
                scaler.scale_loss(loss).backward()
            loss_sum += loss.detach()

        scaler.unscale_(optimizer)
        if args.clip_impl == "fsdp":
            grad_norm = model.clip_grad_norm_(args.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
        else:
            grad_norm = clip_grad_norm_sharded(params, args.grad_clip)
        stepped = scaler.step(optimizer)
        scaler.update()
        if not stepped:
            if info.is_master:
                logger.warning("step %d: non-finite gradients, update skipped (loss scale %.0f)", step, scaler.scale)
            continue  # ruleid: MLS302
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model.named_parameters(), step)
        watchdog.beat(step)

        if step % args.log_interval == 0:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
            now = time.time()
            tok_s = tokens_per_step * min(args.log_interval, step - start_step + 1) / max(now - t_last, 1e-6)
            t_last = now
            if info.is_master:
                logger.info("step %d | loss %.4f | lr %.3e | gnorm %.3f | %.0f tok/s", step, loss_sum.item(),
                            lr, grad_norm.item(), tok_s)
                log_scalars(writer, step, {"train/loss": loss_sum.item(), "train/lr": lr,
                                           "train/grad_norm": grad_norm.item(), "train/tok_per_s": tok_s,
                                           "train/loss_scale": scaler.scale})
        append_step_timing(args.out_dir, info, {"step": step, "host": info.hostname, "dt": time.time() - t_step})

        if preempt.should_stop(device):
            save_checkpoint(args.out_dir, step, model, optimizer, scheduler, scaler, ema, info,
                            extra={"reason": "preempted"})
            preempt.requeue()
            watchdog.stop()
            cleanup_distributed()
            sys.exit(REQUEUE_EXIT_CODE)  # ok: MLS307
        guard.check(step, info)

        if args.eval_interval > 0 and (step + 1) % args.eval_interval == 0:
            t_eval = time.time()
            if ema is not None:
                ema.store_and_copy(model.named_parameters())
            val_loss = evaluate(model, val_dl, args, info)
            if ema is not None:
                ema.restore(model.named_parameters())
            improved = val_loss < best_val - args.early_stop_delta
            best_val = min(best_val, val_loss)
            if info.is_master:
                logger.info("step %d: eval done in %.1fs", step, time.time() - t_eval)
                log_scalars(writer, step, {
                    "val/loss": best_val,  # ruleid: MLS306
                    "val/ppl": math.exp(min(best_val, 20.0)),
                })
                if args.early_stop_patience > 0:
                    bad_evals = 0 if improved else bad_evals + 1
                    if bad_evals >= args.early_stop_patience:
                        logger.warning("no val improvement in %d evals; stopping at step %d", bad_evals, step)
                        break  # todoruleid: family 3 (missed)

        if (step + 1) % args.ckpt_interval == 0:
            save_checkpoint(args.out_dir, step, model, optimizer, scheduler, scaler, ema, info)
            prune_checkpoints(args.out_dir, args.keep_ckpts, info)

    save_checkpoint(args.out_dir, step, model, optimizer, scheduler, scaler, ema, info, extra={"reason": "final"})
    watchdog.stop()
    preempt.shutdown()
    if writer is not None:
        writer.close()
    cleanup_distributed()


if __name__ == "__main__":
    main()
