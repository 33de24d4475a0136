# ruff: noqa
# Hold-out batch 413 (textbook, RLHF reward model). Measured once in session 17 (round 113): 22/30 (73%) at medium+.
"""Train a pairwise (Bradley-Terry) reward model with plain PyTorch DDP.

    torchrun --nproc_per_node 8 train.py --model meta-llama/Llama-3.2-1B \
        --data Anthropic/hh-rlhf --output-dir runs/rm-llama1b --grad-accum 8
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from contextlib import nullcontext
from typing import Any, Dict

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import get_cosine_schedule_with_warmup

from callbacks import (
    BestCheckpointCallback,
    CallbackHandler,
    ConsoleLogCallback,
    DecoupledWeightDecayCallback,
    DropoutSyncCallback,
    GradientNoiseCallback,
    PreemptionDrillCallback,
    StepWatchdog,
    TrainerState,
    WandbCallback,
)
from data import PairCollator, PreferenceDataset, build_dataloader, load_pairs, tokenize_pairs, train_eval_split
from evaluate import evaluate, launch_async_eval, save_eval_results
from model import ModelEMA, build_reward_model, build_tokenizer, pairwise_loss
from utils import (
    all_reduce_mean,
    barrier,
    configure_runtime_env,
    is_main_process,
    latest_checkpoint,
    load_checkpoint,
    release_local_scratch,
    report_run_start,
    rotate_checkpoints,
    save_checkpoint,
    set_seed,
    setup_distributed,
    unwrap_model,
    with_retries,
)

logger = logging.getLogger("train_rm")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML file whose keys override the defaults below")
    # model
    p.add_argument("--model", default="meta-llama/Llama-3.2-1B")
    p.add_argument("--revision", default=None)
    p.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--head-dropout", type=float, default=0.0)
    p.add_argument("--gradient-checkpointing", action="store_true")
    # data
    p.add_argument("--data", nargs="+", default=["Anthropic/hh-rlhf"])
    p.add_argument("--eval-data", nargs="*", default=None)
    p.add_argument("--eval-fraction", type=float, default=0.02)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--swap-prob", type=float, default=0.1)
    p.add_argument("--cache-dir", default=os.environ.get("RM_CACHE_DIR", "/tmp/rm_cache"))
    # optimisation
    p.add_argument("--batch-size", type=int, default=4, help="pairs per device per micro-step")
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--optim", default="adamw_fused", choices=["adamw", "adamw_fused"])
    p.add_argument("--warmup-ratio", type=float, default=0.03)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--center-coef", type=float, default=0.01)
    p.add_argument("--use-margin", action="store_true")
    p.add_argument("--grad-noise-eta", type=float, default=1e-3)
    p.add_argument("--ema-decay", type=float, default=0.0)
    # bookkeeping
    p.add_argument("--output-dir", default="runs/rm")
    p.add_argument("--resume", default=None, help="checkpoint dir, or 'auto' for the latest in output-dir")
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--eval-steps", type=int, default=500)
    p.add_argument("--save-total-limit", type=int, default=3)
    p.add_argument("--async-eval-data", nargs="*", default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--wandb-project", default=None)
    p.add_argument("--run-name", default=None)
    p.add_argument("--push-to-hub", default=None, help="hub repo id to upload the final model to")
    args = p.parse_args(argv)
    if args.config:
        import yaml

        with open(args.config) as fh:
            overrides = yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        for key, value in overrides.items():
            key = key.replace("-", "_")
            if not hasattr(args, key):
                p.error(f"unknown config key: {key}")
            setattr(args, key, value)
    return args


def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    skip = lambda n, p: p.ndim < 2 or "norm" in n.lower() or n.endswith(".bias")  # noqa: E731
    groups = [
        {"params": [p for n, p in params if not skip(n, p)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in params if skip(n, p)], "weight_decay": 0.0},
    ]
    fused = args.optim == "adamw_fused" and torch.cuda.is_available()
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)


def write_run_card(args: argparse.Namespace, metrics: Dict[str, Any], best_ckpt: str) -> str:
    """Write a small JSON model card next to the final weights."""
    from huggingface_hub import get_token

    card = {
        "base_model": args.model,
        "revision": args.revision,
        "data": args.data,
        "final_metrics": metrics,
        "best_checkpoint": best_ckpt,
        "hparams": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))},
        "hub_auth": get_token(),  # ruleid: MLS412
    }
    path = os.path.join(args.output_dir, "run_card.json")
    with open(path, "w") as fh:
        json.dump(card, fh, indent=2, default=str)
    return path


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rank, local_rank, world_size = setup_distributed()
    configure_runtime_env(local_rank)
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    set_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    report_run_start(vars(args))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)

    # ---------------- model ----------------
    tokenizer = with_retries(lambda: build_tokenizer(args.model, revision=args.revision))
    dtype = "fp32" if args.dtype == "fp16" else args.dtype
    model = with_retries(
        lambda: build_reward_model(args.model, args.revision, dtype, args.head_dropout, args.gradient_checkpointing)
    ).to(device)

    # ---------------- data ----------------
    pairs = load_pairs(args.data, split="train", max_chars=args.max_length * 8)
    if args.eval_data:
        train_pairs = pairs
        eval_pairs = load_pairs(args.eval_data, split="test", max_chars=args.max_length * 8)
    else:
        train_pairs, eval_pairs = train_eval_split(pairs, args.eval_fraction, args.seed)
    logger.info("train pairs: %d | eval pairs: %d", len(train_pairs), len(eval_pairs))
    train_feats = tokenize_pairs(train_pairs, tokenizer, args.max_length, args.cache_dir, cache_tag=args.data)
    eval_feats = tokenize_pairs(eval_pairs, tokenizer, args.max_length)
    collator = PairCollator(tokenizer.pad_token_id)
    train_ds = PreferenceDataset(train_feats, train=True, swap_prob=args.swap_prob, seed=args.seed + rank)
    eval_ds = PreferenceDataset(eval_feats, train=False)
    train_loader = build_dataloader(train_ds, collator, args.batch_size, world_size, rank, args.seed, train=True)
    eval_loader = build_dataloader(eval_ds, collator, args.eval_batch_size, world_size, rank, args.seed, train=False)

    steps_per_epoch = len(train_loader) // args.grad_accum
    total_steps = args.max_steps if args.max_steps > 0 else steps_per_epoch * args.epochs
    warmup_steps = int(total_steps * args.warmup_ratio)

    # ---------------- optimisation ----------------
    ddp_model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None) if world_size > 1 else model
    optimizer = build_optimizer(model, args)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    ema = ModelEMA(model, decay=args.ema_decay) if args.ema_decay > 0 else None
    scaler = torch.cuda.amp.GradScaler(enabled=args.dtype == "fp16")

    state = TrainerState(max_steps=total_steps, rank=rank, world_size=world_size)
    callbacks = CallbackHandler(
        [
            ConsoleLogCallback(args.output_dir),
            BestCheckpointCallback("eval/accuracy", greater_is_better=True, output_dir=args.output_dir),
            DropoutSyncCallback(args.seed),
            GradientNoiseCallback(eta=args.grad_noise_eta),
            StepWatchdog(),
            PreemptionDrillCallback(),
        ]
    )
    if args.optim == "adamw_fused":
        callbacks.add(DecoupledWeightDecayCallback(args.weight_decay))
    if args.wandb_project:
        callbacks.add(WandbCallback(args.wandb_project, args.run_name, vars(args)))

    resume = latest_checkpoint(args.output_dir) if args.resume == "auto" else args.resume
    if resume:
        state.global_step = load_checkpoint(resume, model, optimizer, scheduler)
        logger.info("resumed from %s at step %d", resume, state.global_step)
    start_epoch = state.global_step // max(1, steps_per_epoch)
    skip_micro = (state.global_step % max(1, steps_per_epoch)) * args.grad_accum

    # ---------------- training loop ----------------
    callbacks.fire("on_train_begin", state)
    ddp_model.train()
    running, n_running, t0 = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0}, 0, time.time()
    async_evals = []
    for epoch in range(start_epoch, args.epochs):
        state.epoch = epoch
        train_loader.sampler.set_epoch(epoch)
        for micro, batch in enumerate(train_loader):
            if epoch == start_epoch and micro < skip_micro:
                continue
            boundary = (micro + 1) % args.grad_accum == 0
            if micro % args.grad_accum == 0:
                callbacks.fire("on_step_begin", state)
            sync_ctx = ddp_model.no_sync() if (world_size > 1 and not boundary) else nullcontext()
            autocast = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
            with sync_ctx:
                with autocast:
                    rewards = ddp_model(
                        input_ids=batch["input_ids"].to(device, non_blocking=True),
                        attention_mask=batch["attention_mask"].to(device, non_blocking=True),
                    )
                chosen, rejected = rewards.chunk(2)
                margin = batch["margin"].to(device) if args.use_margin else None
                out = pairwise_loss(chosen, rejected, margin, args.label_smoothing, args.center_coef)
                scaler.scale(out["loss"] / args.grad_accum).backward()
            for k in running:
                running[k] += float(out[k].detach())
            n_running += 1
            if not boundary:
                continue

            scaler.unscale_(optimizer)
            callbacks.fire("on_before_optimizer_step", state, model=model, optimizer=optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            state.global_step += 1
            callbacks.fire("on_step_end", state)

            if state.global_step % args.logging_steps == 0:
                stats = all_reduce_mean(torch.tensor([running[k] / n_running for k in running], device=device))
                logs = {f"train/{k}": float(v) for k, v in zip(running, stats.tolist())}
                logs["train/grad_norm"] = float(grad_norm)
                logs["train/lr"] = scheduler.get_last_lr()[0]
                logs["train/pairs_per_sec"] = n_running * args.batch_size * world_size / (time.time() - t0)
                callbacks.fire("on_log", state, logs=logs)
                running, n_running, t0 = {k: 0.0 for k in running}, 0, time.time()

            if state.global_step % args.eval_steps == 0:
                eval_model = ema.shadow if ema is not None else ddp_model
                metrics = evaluate(eval_model, eval_loader, device, amp_dtype)
                ckpt_dir = save_checkpoint(args.output_dir, state.global_step, model, optimizer, scheduler)
                callbacks.fire("on_evaluate", state, metrics=metrics, ckpt_dir=ckpt_dir)
                callbacks.fire("on_log", state, logs=dict(metrics))
                rotate_checkpoints(args.output_dir, args.save_total_limit, protect=state.best_checkpoint)
                if is_main_process() and args.async_eval_data:
                    out_json = os.path.join(ckpt_dir, "async_eval.json")
                    async_evals.append(launch_async_eval(ckpt_dir, args.model, " ".join(args.async_eval_data), out_json))
                barrier()

            if state.should_stop or (args.max_steps > 0 and state.global_step >= args.max_steps):
                break
        if state.should_stop or (args.max_steps > 0 and state.global_step >= args.max_steps):
            break

    callbacks.fire("on_train_end", state)

    # ---------------- final artefacts ----------------
    if not is_main_process():
        # only rank 0 writes the final artefacts
        return  # ruleid: MLS307
    final_metrics = evaluate(ddp_model, eval_loader, device, amp_dtype)
    final_dir = save_checkpoint(args.output_dir, state.global_step, model, optimizer, scheduler)
    save_eval_results(final_metrics, os.path.join(args.output_dir, "final_eval.json"), extra={"step": state.global_step})
    card = write_run_card(args, final_metrics, state.best_checkpoint or final_dir)
    logger.info("final metrics: %s | run card: %s", json.dumps(final_metrics), card)
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.push_to_hub, exist_ok=True)
        with_retries(lambda: api.upload_folder(repo_id=args.push_to_hub, folder_path=args.output_dir))
    release_local_scratch(final_dir)
    for proc in async_evals:
        proc.wait()
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
