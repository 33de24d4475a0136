# ruff: noqa
# Hold-out batch 348 (families 2/5/6, abstractive summarization). Measured once in session 12 (round 96): 14/34 (41%) at medium+.
"""Train a seq2seq transformer for abstractive summarization of news articles.

Example:
    torchrun --nproc_per_node 8 train.py --data_dir data/cnn_dm --output_dir runs/base \
        --tokenizer t5-small --batch_size 16 --gradient_accumulation_steps 2 --fp16
"""
import argparse
import contextlib
import functools
import json
import logging
import math
import os
import time
from typing import Dict, List

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, RandomSampler

from callbacks import (
    CallbackHandler,
    CheckpointCallback,
    DistributedLRCallback,
    EMACallback,
    EpochSetupCallback,
    ParamNormCallback,
    RunMetadataCallback,
    TrainerControl,
    TrainerState,
    WandbCallback,
)
from data import (
    DistributedLengthSampler,
    Seq2SeqCollator,
    SummarizationDataset,
    build_tokenizer,
    load_or_build_features,
    load_split,
)
from evaluate import evaluate_split, select_eval_subset
from model import Seq2SeqConfig, build_model
from utils import (
    average_checkpoints,
    build_summary_writer,
    cleanup_distributed,
    clip_gradients,
    list_checkpoints,
    load_config,
    load_model_weights,
    load_trainer_state,
    register_project_path,
    seed_everything,
    setup_distributed,
    setup_logging,
    skip_spiky_update,
)

logger = logging.getLogger("train")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--run_name", default="summ-base")
    p.add_argument("--tokenizer", default="t5-small")
    p.add_argument("--model_config", default=None, help="JSON file with Seq2SeqConfig fields")
    p.add_argument("--override", nargs="*", default=[], help="key=value overrides for the model config")
    p.add_argument("--init_from", default=None, help="model.pt to initialise from")
    p.add_argument("--resume_from_checkpoint", default=None)
    p.add_argument("--max_source_length", type=int, default=512)
    p.add_argument("--max_target_length", type=int, default=142)
    p.add_argument("--max_source_words", type=int, default=2000)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--eval_batch_size", type=int, default=32)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--layer_lr_decay", type=float, default=0.9)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--adam_betas", type=float, nargs=2, default=(0.9, 0.98))
    p.add_argument("--warmup_steps", type=int, default=2000)
    p.add_argument("--num_epochs", type=int, default=10)
    p.add_argument("--max_steps", type=int, default=-1)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--curriculum_epochs", type=int, default=1)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--ema_decay", type=float, default=0.0)
    p.add_argument("--logging_steps", type=int, default=50)
    p.add_argument("--eval_steps", type=int, default=2000)
    p.add_argument("--max_eval_samples", type=int, default=2000)
    p.add_argument("--save_total_limit", type=int, default=3)
    p.add_argument("--average_last_k", type=int, default=5)
    p.add_argument("--metric_for_best", default="eval_rougeLsum")
    p.add_argument("--wandb_project", default=None)
    p.add_argument("--registry_url", default=os.environ.get("EXPERIMENT_REGISTRY_URL"))
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


# ------------------------------------------------------------ optimization
def layerwise_param_groups(model, base_lr: float, decay: float, weight_decay: float) -> List[Dict]:
    """Layer-wise LR decay: lower layers of each stack get geometrically smaller LRs."""
    n_enc = model.cfg.n_encoder_layers
    n_dec = model.cfg.n_decoder_layers
    groups: Dict[tuple, Dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("encoder.layers."):
            depth = int(name.split(".")[2]) + 1
            scale = decay ** (n_enc + 1 - depth)
        elif name.startswith("decoder.layers."):
            depth = int(name.split(".")[2]) + 1
            scale = decay ** (n_dec + 1 - depth)
        elif name.startswith("shared."):
            scale = decay ** (max(n_enc, n_dec) + 1)
        else:
            scale = 1.0
        no_decay = param.ndim < 2 or "norm" in name
        key = (round(scale, 6), no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": base_lr * scale,  # ok: MLS302, MLS303, MLS304, MLS305
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def inverse_sqrt_schedule(warmup_steps: int):
    def fn(step: int) -> float:
        step = max(step, 1)
        if step < warmup_steps:
            return step / warmup_steps
        return math.sqrt(warmup_steps / step)
    return fn


def install_grad_release(optimizer: torch.optim.Optimizer) -> None:
    """Free gradient memory as soon as the update has been applied."""
    orig_step = optimizer.step

    @functools.wraps(orig_step)
    def _step_and_release(*args, **kwargs):
        optimizer.zero_grad(set_to_none=True)  # ruleid: MLS302
        return orig_step(*args, **kwargs)

    optimizer.step = _step_and_release  # ruleid: MLS305


# -------------------------------------------------------------------- main
def main() -> None:
    args = parse_args()
    dist_info = setup_distributed()
    rank, world_size = dist_info["rank"], dist_info["world_size"]
    setup_logging(args.output_dir, rank)
    seed_everything(args.seed)
    if rank == 0:
        register_project_path(os.path.dirname(os.path.abspath(__file__)))
    device = torch.device(f"cuda:{dist_info['local_rank']}" if torch.cuda.is_available() else "cpu")

    tokenizer = build_tokenizer(args.tokenizer)
    cfg_dict = load_config(args.model_config, args.override)
    cfg = Seq2SeqConfig(**{
        **cfg_dict,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,
    })

    # ---------------------------------------------------------------- data
    train_examples = load_split(args.data_dir, "train", args.max_source_words)
    val_examples = select_eval_subset(load_split(args.data_dir, "val"), args.max_eval_samples)
    cache = os.path.join(args.data_dir, "cache", f"train.{os.path.basename(args.tokenizer)}.{args.max_source_length}.pt")
    features = load_or_build_features(tokenizer, train_examples, cache, args.max_source_length, args.max_target_length)
    train_ds = SummarizationDataset(features, train_examples)
    collator = Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.eos_token_id, cfg.decoder_start_token_id)
    if world_size > 1:
        sampler = DistributedLengthSampler(train_ds.lengths(), world_size, rank, args.seed,
                                           curriculum_epochs=args.curriculum_epochs)
    else:
        sampler = RandomSampler(train_ds)
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, collate_fn=collator,
                              num_workers=args.num_workers, pin_memory=True, drop_last=True)

    # --------------------------------------------------------------- model
    model = build_model(cfg).to(device)
    if args.init_from:
        load_model_weights(model, args.init_from)
    logger.info("model: %.1fM parameters", model.num_parameters() / 1e6)
    raw_model = model
    if world_size > 1:
        model = DDP(model, device_ids=[dist_info["local_rank"]] if torch.cuda.is_available() else None)

    param_groups = layerwise_param_groups(raw_model, args.lr, args.layer_lr_decay, args.weight_decay)
    optimizer = torch.optim.AdamW(param_groups, lr=args.lr, betas=tuple(args.adam_betas), eps=1e-8)
    install_grad_release(optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_sqrt_schedule(args.warmup_steps))
    scaler = torch.cuda.amp.GradScaler(enabled=args.fp16)

    steps_per_epoch = len(train_loader) // args.gradient_accumulation_steps
    max_steps = args.max_steps if args.max_steps > 0 else steps_per_epoch * args.num_epochs
    state = TrainerState(max_steps=max_steps, world_size=world_size, is_world_process_zero=rank == 0)
    control = TrainerControl()

    ema = EMACallback(raw_model, args.ema_decay) if args.ema_decay > 0 else None
    ckpt_cb = CheckpointCallback(args.output_dir, args.metric_for_best, save_total_limit=args.save_total_limit)
    callbacks = [EpochSetupCallback(), DistributedLRCallback(), ParamNormCallback(), ckpt_cb,
                 RunMetadataCallback(args.registry_url)]
    if ema is not None:
        callbacks.append(ema)
    if args.wandb_project:
        callbacks.append(WandbCallback(args.wandb_project, args.run_name, vars(args),
                                       cfg.label_smoothing, cfg.vocab_size))
    handler = CallbackHandler(callbacks)
    writer = build_summary_writer(os.path.join(args.output_dir, "tb")) if rank == 0 else None

    start_epoch = 0
    if args.resume_from_checkpoint:
        load_model_weights(raw_model, os.path.join(args.resume_from_checkpoint, "model.pt"))
        resumed = load_trainer_state(args.resume_from_checkpoint, optimizer, scheduler, scaler, device)
        state.global_step = int(os.path.basename(args.resume_from_checkpoint.rstrip("/")).split("-")[-1])
        start_epoch = int(resumed.get("epoch", 0))
        logger.info("resumed from %s at step %d", args.resume_from_checkpoint, state.global_step)

    cb_kwargs = dict(model=raw_model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                     train_sampler=sampler)
    handler.fire("on_train_begin", args, state, control, **cb_kwargs)

    # ---------------------------------------------------------------- loop
    history: List[Dict[str, float]] = []
    running_loss = torch.zeros((), device=device)
    smoothed_loss = None
    skipped = 0
    t0 = time.time()
    model.train()
    for epoch in range(start_epoch, args.num_epochs):
        state.epoch = epoch
        handler.fire("on_epoch_begin", args, state, control, **cb_kwargs)
        for micro_step, batch in enumerate(train_loader):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "idx"}
            is_boundary = (micro_step + 1) % args.gradient_accumulation_steps == 0
            sync_ctx = model.no_sync() if (world_size > 1 and not is_boundary) else contextlib.nullcontext()
            with sync_ctx:
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=args.fp16):
                    out = model(**batch)
                loss = out["loss"] / args.gradient_accumulation_steps  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            running_loss += loss.detach()
            if not is_boundary:
                continue

            scaler.unscale_(optimizer)
            params = [p for p in raw_model.parameters() if p.requires_grad]
            grad_norm = clip_gradients(params, args.max_grad_norm)
            if skip_spiky_update(params, grad_norm, args.max_grad_norm):
                skipped += 1
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            handler.fire("on_step_end", args, state, control, **cb_kwargs)

            if state.global_step % args.logging_steps == 0:
                avg_loss = running_loss.item() / (args.logging_steps * args.gradient_accumulation_steps)  # todoruleid: family 5 (missed)
                running_loss.zero_()
                smoothed_loss = avg_loss if smoothed_loss is None else 0.9 * smoothed_loss + 0.1 * avg_loss  # ok: MLS306
                logs = {"loss": avg_loss, "lr": scheduler.get_last_lr()[-1], "grad_norm": float(grad_norm),
                        "skipped_updates": skipped, "epoch": epoch}
                state.log_history.append({"step": state.global_step, **logs})
                handler.fire("on_log", args, state, control, logs=logs)
                if writer is not None:
                    for k, v in logs.items():
                        writer.add_scalar(f"train/{k}", v, state.global_step)
                if rank == 0:
                    rate = state.global_step / (time.time() - t0)
                    logger.info("step %d/%d | loss %.4f (smoothed %.4f) | lr %.2e | %.2f it/s",
                                state.global_step, max_steps, avg_loss, smoothed_loss, logs["lr"], rate)

            if state.global_step % args.eval_steps == 0:
                metrics = run_eval(args, raw_model, ema, tokenizer, val_examples, device, rank)
                history.append(metrics)
                handler.fire("on_evaluate", args, state, control, metrics=metrics)
                handler.fire("on_log", args, state, control, logs=metrics)
                if writer is not None:
                    for k, v in metrics.items():
                        writer.add_scalar(f"eval/{k[5:]}", v, state.global_step)
            if control.should_save:
                handler.fire("on_save", args, state, control, **cb_kwargs)
                control.should_save = False
            if control.should_training_stop or state.global_step >= max_steps:
                break
        if control.should_training_stop or state.global_step >= max_steps:
            break

    # ------------------------------------------------------------- wrap up
    handler.fire("on_train_end", args, state, control, **cb_kwargs)
    final = finalize(args, raw_model, ema, tokenizer, device, rank, history)
    if rank == 0:
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump(final, f, indent=2)
        logger.info("final: %s", json.dumps(final))
        if writer is not None:
            writer.close()
    cleanup_distributed()


def run_eval(args, raw_model, ema, tokenizer, examples, device, rank) -> Dict[str, float]:
    if ema is not None:
        ema.swap_in(raw_model)
    try:
        metrics = evaluate_split(raw_model, tokenizer, examples, device, args.eval_batch_size,
                                 args.max_source_length, args.max_target_length,
                                 max_new_tokens=args.max_target_length)
    finally:
        if ema is not None:
            ema.swap_out(raw_model)
    metrics = {f"eval_{k}": v for k, v in metrics.items()}
    if rank == 0:
        logger.info("eval: %s", json.dumps(metrics))
    return metrics


def finalize(args, raw_model, ema, tokenizer, device, rank, history) -> Dict[str, float]:
    ckpts = list_checkpoints(args.output_dir)[-args.average_last_k:]
    if len(ckpts) > 1:
        averaged = average_checkpoints(ckpts)
        raw_model.load_state_dict(averaged, strict=False)
        if rank == 0:
            torch.save({"model": averaged}, os.path.join(args.output_dir, "model_averaged.pt"))
            logger.info("averaged %d checkpoints: %s", len(ckpts), ", ".join(map(os.path.basename, ckpts)))
    test_examples = load_split(args.data_dir, "test")
    final = run_eval(args, raw_model, None, tokenizer, test_examples, device, rank)
    final = {k: max([v] + [h[k] for h in history if k in h]) if "rouge" in k else v for k, v in final.items()}  # todoruleid: family 5 (missed)
    return final


if __name__ == "__main__":
    main()
