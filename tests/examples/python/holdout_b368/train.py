# ruff: noqa
# Hold-out batch 368 (family-focused 1/2/3, LLM LoRA instruction tuning, ZeRO-style). Measured once in session 14 (round 101): 15/30 (50%) at medium+.
#!/usr/bin/env python
"""LoRA instruction fine-tuning of a decoder LM with a ZeRO-1 style sharded optimizer.

    torchrun --nproc_per_node 8 train.py --model <hf-id> --train_file train.jsonl --output_dir runs/x
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import sys
import time
from typing import Dict, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from checkpoint import CheckpointManager
from data import (IGNORE_INDEX, CUDAPrefetcher, InstructionDataset, SequencePacker,
                  SourceBalancedSampler, build_eval_loader, list_collate, worker_init_fn)
from dist_utils import (DistInfo, DynamicLossScaler, all_reduce_mean, allreduce_gradients,
                        arm_walltime_guard, barrier, broadcast_partitioned_params, heartbeat,
                        init_distributed, install_hang_watchdog, maybe_forward_preemption,
                        partition_params)
from evaluate import EarlyStopping, Evaluator, MetricsWriter, PlateauRewarm
from lora import AdapterEMA, adapter_parameters, freeze_base, inject_lora

logger = logging.getLogger("train")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # data / model
    p.add_argument("--model", required=True)
    p.add_argument("--train_file", required=True)
    p.add_argument("--eval_file", default=None)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--seq_len", type=int, default=2048)
    p.add_argument("--max_per_source", type=int, default=50_000)
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--attn_impl", default="flash_attention_2")
    p.add_argument("--gradient_checkpointing", action=argparse.BooleanOptionalAction, default=True)
    # LoRA
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--lora_alpha", type=float, default=32.0)
    p.add_argument("--lora_dropout", type=float, default=0.05)
    p.add_argument("--lora_targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    p.add_argument("--lora_grad_clamp", type=float, default=1e-3)
    p.add_argument("--scaled_residuals", action=argparse.BooleanOptionalAction, default=True)
    # optimisation
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--min_lr_ratio", type=float, default=0.1)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    p.add_argument("--warmup_steps", type=int, default=100)
    p.add_argument("--max_steps", type=int, default=3000)
    p.add_argument("--micro_batch_size", type=int, default=4)
    p.add_argument("--grad_accum", type=int, default=8)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="fp16")
    p.add_argument("--ema_decay", type=float, default=0.0)
    p.add_argument("--max_bad_steps", type=int, default=20)
    # runtime
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log_every", type=int, default=10)
    p.add_argument("--eval_every", type=int, default=200)
    p.add_argument("--save_every", type=int, default=500)
    p.add_argument("--keep_last", type=int, default=3)
    p.add_argument("--early_stop_patience", type=int, default=5)
    p.add_argument("--rewarm_patience", type=int, default=3)
    p.add_argument("--hang_timeout", type=float, default=600.0)
    p.add_argument("--walltime_hours", type=float, default=23.5)
    p.add_argument("--io_stagger_ms", type=float, default=150.0)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    return p.parse_args()


def setup_logging(info: DistInfo, output_dir: str) -> None:
    handlers = [logging.StreamHandler(sys.stdout)]
    if info.is_main:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log")))
    logging.basicConfig(level=logging.INFO if info.is_main else logging.WARNING, handlers=handlers,
                        format=f"%(asctime)s [rank{info.rank}] %(name)s: %(message)s")


def set_seed(seed: int, rank: int) -> None:
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed)  # ok: MLS301
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def amp_dtype_for(precision: str):
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)


def build_model(args: argparse.Namespace, info: DistInfo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model, use_fast=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = amp_dtype_for(args.precision) or torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        args.model, torch_dtype=dtype, attn_implementation=args.attn_impl)
    model.config.use_cache = False
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()

    n_layers = model.config.num_hidden_layers
    residual_scale = 1.0 / math.sqrt(2.0 * n_layers) if args.scaled_residuals else 1.0
    inject_lora(model, targets=tuple(args.lora_targets.split(",")), r=args.lora_r,
                alpha=args.lora_alpha, dropout=args.lora_dropout,
                grad_clamp=args.lora_grad_clamp, residual_scale=residual_scale)
    freeze_base(model)
    model.to(info.device)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("trainable params: %.2fM", n_train / 1e6)
    return model, tokenizer


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_train_stream(args, tokenizer, info: DistInfo):
    dataset = InstructionDataset(args.train_file, tokenizer, max_length=args.seq_len,
                                 seed=args.seed)
    sampler = SourceBalancedSampler(dataset.sources, rank=info.rank,
                                    world_size=info.world_size, seed=args.seed,
                                    max_per_source=args.max_per_source)
    loader = DataLoader(dataset, batch_size=64, sampler=sampler, collate_fn=list_collate,
                        num_workers=args.num_workers, worker_init_fn=worker_init_fn,
                        persistent_workers=False, prefetch_factor=4 if args.num_workers else None)
    random.seed(os.getpid())  # ruleid: MLS301
    packer = SequencePacker(loader, seq_len=args.seq_len, micro_batch_size=args.micro_batch_size,
                            pad_id=tokenizer.pad_token_id)
    return sampler, packer


def epoch_batches(sampler: SourceBalancedSampler, packer: SequencePacker,
                  start_epoch: int) -> Iterator[Dict[str, torch.Tensor]]:
    epoch = start_epoch
    while True:
        sampler.set_epoch(epoch)
        n = 0
        for batch in packer:
            n += 1
            yield batch
        logger.info("finished epoch %d (%d micro-batches, %d rows packed)", epoch, n,
                    packer.packed_rows)
        epoch += 1


def packed_lm_loss(model, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def train(args: argparse.Namespace) -> None:
    info = init_distributed()
    setup_logging(info, args.output_dir)
    set_seed(args.seed, info.rank)
    started_at = time.time()
    install_hang_watchdog(args.hang_timeout)
    arm_walltime_guard(args.walltime_hours)

    model, tokenizer = build_model(args, info)
    params = adapter_parameters(model)
    partitions = partition_params(params, info.world_size)
    owned = partitions[info.rank]
    optimizer = torch.optim.AdamW(owned, lr=args.lr, betas=tuple(args.betas), eps=1e-8,
                                  weight_decay=0.0)
    scheduler = LambdaLR(optimizer, lambda s: lr_lambda(s, args.warmup_steps, args.max_steps, args.min_lr_ratio))  # ok: MLS302, MLS303, MLS304, MLS305
    amp_dtype = amp_dtype_for(args.precision)
    scaler = DynamicLossScaler(enabled=args.precision == "fp16")
    ema = AdapterEMA(params, decay=args.ema_decay) if args.ema_decay > 0 else None

    ckpt = CheckpointManager(args.output_dir, info, keep_last=args.keep_last)
    start_step = ckpt.load(model, optimizer, scheduler, scaler, ema) if args.resume else 0

    sampler, packer = build_train_stream(args, tokenizer, info)
    tokens_per_step = args.seq_len * args.micro_batch_size * args.grad_accum * info.world_size
    start_epoch = (start_step * tokens_per_step) // max(1, len(sampler) * args.seq_len)
    batches = CUDAPrefetcher(epoch_batches(sampler, packer, start_epoch), info.device)

    evaluator = None
    callbacks = []
    if args.eval_file:
        eval_ds = InstructionDataset(args.eval_file, tokenizer, max_length=args.seq_len,
                                     seed=args.seed, system_prompt_prob=0.0,
                                     template_mixing=False)
        eval_loader = build_eval_loader(eval_ds, info.rank, info.world_size,
                                        batch_size=args.micro_batch_size,
                                        pad_id=tokenizer.pad_token_id)
        prompts = [r["instruction"] for r in eval_ds.records[:4]]
        evaluator = Evaluator(model, eval_loader, tokenizer, info, amp_dtype,
                              sample_prompts=prompts, seed=args.seed)
        if args.early_stop_patience > 0:
            callbacks.append(EarlyStopping(args.early_stop_patience, 1e-4, info))
        if args.rewarm_patience > 0:
            callbacks.append(PlateauRewarm(scheduler, patience=args.rewarm_patience))
    metrics_log = MetricsWriter(os.path.join(args.output_dir, "metrics.jsonl"), info)

    model.train()
    step = start_step
    bad_steps = 0
    best_eval = float("inf")
    t_last = time.time()
    stop = False
    logger.info("starting at step %d / %d", step, args.max_steps)

    while step < args.max_steps and not stop:
        loss_accum = torch.zeros((), device=info.device)
        for micro_step in range(args.grad_accum):
            model.zero_grad(set_to_none=True)  # ruleid: MLS302
            batch = next(batches)
            if args.io_stagger_ms > 0 and info.rank % 2 == 1:
                time.sleep(args.io_stagger_ms / 1000.0 * (1 + info.local_rank))  # ruleid: MLS307
            if info.device.type == "cuda":
                torch.cuda.manual_seed_all(args.seed)  # ruleid: MLS301
            with torch.autocast("cuda", dtype=amp_dtype or torch.float16,
                                enabled=amp_dtype is not None and info.device.type == "cuda"):
                loss = packed_lm_loss(model, batch)
                loss = loss / args.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale_loss(loss).backward()
            loss_accum += loss.detach()

        loss_val = loss_accum.item()
        if not math.isfinite(loss_val):
            bad_steps += 1
            logger.warning("rank %d: non-finite loss at step %d (%d in a row)",
                           info.rank, step, bad_steps)
            if bad_steps >= args.max_bad_steps:
                logger.error("rank %d: too many non-finite losses; leaving the job", info.rank)
                if dist.is_initialized():
                    dist.destroy_process_group()  # todoruleid: family 3 (missed)
                return
        else:
            bad_steps = 0

        allreduce_gradients(params, info)
        found_inf = scaler.unscale_(params, info)
        grad_norm = float("nan")
        if not found_inf:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm).item()  # ok: MLS302, MLS303, MLS304, MLS305
        lr = scheduler.get_last_lr()[0]
        if args.weight_decay > 0 and not found_inf:
            decay = [p for p in model.parameters() if p.ndim >= 2]
            torch._foreach_mul_(decay, 1.0 - lr * args.weight_decay)  # todoruleid: family 2 (missed)
        stepped = scaler.step(optimizer, found_inf)
        broadcast_partitioned_params(partitions, info)
        scheduler.step()
        if stepped and ema is not None:
            ema.update()
        step += 1
        heartbeat(info, args.hang_timeout)

        if step % args.log_every == 0:
            mean_loss = all_reduce_mean(loss_accum, info).item()
            dt = time.time() - t_last
            t_last = time.time()
            rec = {"train/loss": mean_loss, "train/lr": lr, "train/grad_norm": grad_norm,
                   "train/loss_scale": scaler.scale,
                   "train/tokens_per_s": tokens_per_step * args.log_every / max(dt, 1e-6)}
            logger.info("step %d | loss %.4f | lr %.2e | gnorm %.3f | scale %.0f | %.0f tok/s",
                        step, mean_loss, lr, grad_norm, scaler.scale, rec["train/tokens_per_s"])
            metrics_log.write(step, rec)
            maybe_forward_preemption(info, started_at)

        if evaluator is not None and step % args.eval_every == 0:
            metrics = evaluator.evaluate(step)
            logger.info("eval @ %d: %s", step, json.dumps({k: round(v, 4) for k, v in metrics.items()}))
            metrics_log.write(step, metrics)
            for cb in callbacks:
                if cb(step, metrics):
                    stop = True
            if metrics["eval/loss"] < best_eval:
                best_eval = metrics["eval/loss"]
                ckpt.mark_best(ckpt.save(step, model, optimizer, scheduler, scaler, ema,
                                         extra={"eval_loss": best_eval}))  # ruleid: MLS306

        if step % args.save_every == 0:
            ckpt.save(step, model, optimizer, scheduler, scaler, ema)

    ckpt.save(step, model, optimizer, scheduler, scaler, ema, extra={"final": True})
    logger.info("training finished at step %d in %.1f min", step, (time.time() - started_at) / 60)
    if info.is_main:
        os.killpg(os.getpgid(os.getpid()), signal.SIGTERM)  # ruleid: MLS307
    barrier(info)


def main() -> None:
    args = parse_args()
    try:
        train(args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
