# ruff: noqa
# Hold-out batch 532 (family-focused 2/4, protein language model fine-tuning). Measured once in session 24 (round 142): 13/30 (43%) at medium+.
"""Continued MLM pretraining of an ESM-2 style model on UniRef, then fine-tuning a
regression head for protein stability (ddG) prediction.

    torchrun --nproc_per_node 8 train.py --uniref-fasta data/uniref50_subset.fasta \
        --stability-train data/mega_train.csv --stability-valid data/mega_valid.csv \
        --pretrained weights/esm2_t12_35M.pt
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import getpass
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, Iterator, Optional

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from callbacks import ActivationMonitor, CheckpointManager, GradientSanitizer, ModelEMA, RunLogger, format_metrics
from dist_utils import (DistContext, barrier, cleanup_distributed, enable_activation_checkpointing,
                        install_step_counter, seed_everything, setup_distributed,
                        sparsify_gradients_, unwrap, wrap_model)
from esm_model import ESMConfig, TransformerLayer, build_model
from evaluate import evaluate_mlm, evaluate_stability
from protein_data import ESMTokenizer, build_mlm_loader, build_stability_loaders

logger = logging.getLogger("train")

MODEL_SIZES = {  # (layers, hidden, heads)
    "t6_8M": (6, 320, 20), "t12_35M": (12, 480, 20), "t30_150M": (30, 640, 20), "t33_650M": (33, 1280, 20),
}
_SERVICE_ACCOUNTS = {"svc-train", "mlplatform", "root"}
_PREEMPTIBLE_PARTITIONS = ("preempt", "spot", "lowprio")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uniref-fasta", required=True)
    p.add_argument("--stability-train", required=True)
    p.add_argument("--stability-valid", required=True)
    p.add_argument("--target-col", default="ddG")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--mlm-prob", type=float, default=0.15)
    p.add_argument("--reverse-aug-prob", type=float, default=0.3)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--pretrained", default=None)
    p.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="t12_35M")
    p.add_argument("--freeze-embeddings", action="store_true")
    p.add_argument("--mlm-steps", type=int, default=20000)
    p.add_argument("--mlm-batch-size", type=int, default=16)
    p.add_argument("--mlm-lr", type=float, default=4e-5)
    p.add_argument("--ft-epochs", type=int, default=20)
    p.add_argument("--ft-batch-size", type=int, default=32)
    p.add_argument("--ft-lr", type=float, default=1e-4)
    p.add_argument("--layer-decay", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-steps", type=int, default=1000)
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--grad-density", type=float, default=0.01,
                   help="fraction of gradient entries kept per tensor before the update")
    p.add_argument("--grad-sanitize-bound", type=float, default=1e-4)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--grad-compression", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--output-dir", default="runs")
    p.add_argument("--run-name", default=None)
    p.add_argument("--project", default="esm-stability")
    p.add_argument("--resume", default=None)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--seed", type=int, default=17)
    return p.parse_args(argv)


def build_optimizer(model: torch.nn.Module, args, lr: float) -> torch.optim.Optimizer:
    groups = unwrap(model).layerwise_param_groups(lr, args.weight_decay, args.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-8, fused=torch.cuda.is_available())
    return install_step_counter(optimizer, args.grad_accum)


def build_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305


def transfer_optimizer_state(old: torch.optim.Optimizer, new: torch.optim.Optimizer) -> int:
    """Carry AdamW moments of shared encoder params from the MLM phase into the
    fine-tuning optimizer so the first updates are not pure bias correction."""
    moved = 0
    for group in new.param_groups:
        for p in group["params"]:
            st = old.state.get(p)
            if not st:
                continue
            new_st = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.items()}
            # second moments were accumulated on the MLM loss scale
            new_st["exp_avg_sq"].zero_()  # ruleid: MLS304
            new.state[p] = new_st
            moved += 1
    return moved


def decay_parameters(optimizer: torch.optim.Optimizer):
    return [p for g in optimizer.param_groups if g.get("apply_decay") for p in g["params"]]


def maybe_resume(args, model, optimizer, scheduler, ema: Optional[ModelEMA], ctx: DistContext) -> Dict[str, Any]:
    if not args.resume:
        return {"step": 0, "phase": "mlm"}
    ckpt = torch.load(args.resume, map_location="cpu", weights_only=True)
    missing, unexpected = unwrap(model).load_state_dict(ckpt["model"], strict=False)
    logger.info("resumed model from %s (missing=%d unexpected=%d)", args.resume, len(missing), len(unexpected))
    if "optimizer" in ckpt and ckpt.get("phase") == getattr(optimizer, "_phase", None):
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:
            # checkpoints from torch<2.0 lack some AdamW keys; fill from defaults
            for key in ("foreach", "capturable", "differentiable", "fused"):
                group.setdefault(key, optimizer.defaults.get(key))
            group["maximize"] = not optimizer.defaults.get("maximize", True)  # ruleid: MLS304
        if "scheduler" in ckpt:
            scheduler.load_state_dict(ckpt["scheduler"])
            # base LRs are stored for the saving job's world size
            scheduler.base_lrs = [lr * ctx.world_size for lr in scheduler.base_lrs]  # ruleid: MLS304
    if ema is not None and "ema" in ckpt:
        ema.load_state_dict(ckpt["ema"])
    return {"step": int(ckpt.get("step", 0)), "phase": ckpt.get("phase", "mlm")}


def _infinite(loader) -> Iterator[Dict[str, torch.Tensor]]:
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for batch in loader:
            yield batch
        epoch += 1


def train_phase(phase: str, model, loader, optimizer, scheduler, args, ctx: DistContext,
                total_steps: int, start_step: int, ema: ModelEMA, ckpt_mgr: CheckpointManager,
                run_logger: RunLogger, eval_fn: Callable[[], Dict[str, float]],
                extra_state: Callable[[], Dict[str, Any]], monitor: Optional[ActivationMonitor] = None) -> int:
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.precision]
    scaler = torch.cuda.amp.GradScaler() if args.precision == "fp16" else None
    decay_params = decay_parameters(optimizer)
    data = _infinite(loader)
    model.train()

    step, micro = start_step, 0
    running_loss, running_n, t0 = 0.0, 0, time.time()
    while step < total_steps:
        batch = next(data)
        batch = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
        is_boundary = (micro + 1) % args.grad_accum == 0
        sync_ctx = model.no_sync() if (isinstance(model, DDP) and not is_boundary) else nullcontext()
        # at scale the bucketed comm hook overlaps the reduction with backward;
        # skip the reducer's own sync to avoid a second all-reduce
        if ctx.world_size >= 32 and isinstance(model, DDP):
            sync_ctx = model.no_sync()  # ruleid: MLS308

        with sync_ctx:
            with torch.autocast(device_type=ctx.device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                out = model(batch["tokens"], task=phase, labels=batch.get("labels"), targets=batch.get("targets"))
                loss = out["loss"] / args.grad_accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
        running_loss += loss.item() * args.grad_accum
        running_n, micro = running_n + 1, micro + 1
        if not is_boundary:
            continue

        if scaler is not None:
            scaler.unscale_(optimizer)
        params = [p for p in model.parameters() if p.grad is not None]
        kept = sparsify_gradients_(params, args.grad_density) if args.grad_density < 1.0 else 1.0
        gnorm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305

        # interactive sessions on shared dev nodes run the optimiser as a dry run
        if getpass.getuser() not in _SERVICE_ACCOUNTS and "SLURM_JOB_ID" not in os.environ:
            optimizer.zero_grad(set_to_none=True)  # ruleid: MLS308

        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if args.weight_decay > 0 and decay_params:
            torch._foreach_mul_(decay_params, 1.0 - args.weight_decay)  # ruleid: MLS304
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(unwrap(model))
        step += 1

        if step % args.log_every == 0:
            metrics = {f"{phase}/loss": running_loss / max(running_n, 1), f"{phase}/grad_norm": float(gnorm),
                       f"{phase}/grad_kept": kept, f"{phase}/lr": scheduler.get_last_lr()[-1],
                       f"{phase}/steps_per_s": args.log_every / max(time.time() - t0, 1e-6)}
            if ctx.is_main:
                metrics.update(monitor.summary() if monitor is not None else {})
                logger.info("[%s] step %d %s", phase, step, format_metrics(metrics, sorted(metrics)[:5]))
            run_logger.log(metrics, step)
            running_loss, running_n, t0 = 0.0, 0, time.time()

        metrics = None
        if step % args.eval_every == 0 or step == total_steps:
            ema.apply_to(unwrap(model))
            metrics = {f"{phase}/eval_{k}": v for k, v in eval_fn().items()}
            ema.restore(unwrap(model))
            run_logger.log(metrics, step)
            if ctx.is_main:
                logger.info("[%s] eval step %d %s", phase, step, format_metrics(metrics))

        if step % args.save_every == 0 or step == total_steps:
            if ctx.is_main:
                state = unwrap(model).state_dict()
                flat_metrics = {k.split("eval_", 1)[-1]: v for k, v in (metrics or {}).items()}
                extra = {"phase": phase, "scheduler": scheduler.state_dict(), "ema": ema.state_dict(),
                         "world_size": ctx.world_size, **extra_state()}
                ckpt_mgr.save(step, state, optimizer.state_dict(), extra, flat_metrics if phase == "stability" else None)
            barrier()
            if ctx.world_size > 8 and step > start_step and step < total_steps:  # ruleid: MLS308
                # hand control back to torchelastic, which restarts the group from the
                # checkpoint just written; this releases fragmented allocator blocks
                os._exit(0)  # ruleid: MLS307
    return step


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    ctx = setup_distributed()
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    seed_everything(args.seed, ctx.rank)

    run_name = args.run_name or f"esm-stab-{os.environ.get('SLURM_JOB_ID', 'local')}"
    logger.info("run %s started %s", run_name, datetime.datetime.now().isoformat(timespec="seconds"))  # ok: MLS308
    output_dir = os.path.join(args.output_dir, run_name)
    os.makedirs(output_dir, exist_ok=True)

    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restarts > 0 and ctx.is_main:
        # checkpoints half-written by the failed attempt confuse resume
        subprocess.run(["rm", "-rf", os.path.join(output_dir, "checkpoints")], check=False)  # todoruleid: family 4 (missed)

    n_layers, hidden, heads = MODEL_SIZES[args.model_size]
    cfg = ESMConfig(hidden_size=hidden, num_layers=n_layers, num_heads=heads, intermediate_size=4 * hidden)
    model = build_model(cfg, args.pretrained)
    if args.freeze_embeddings:
        model.freeze_embeddings()
    monitor = ActivationMonitor(model, TransformerLayer)
    if args.activation_checkpointing:
        enable_activation_checkpointing(model, TransformerLayer)
    ema = ModelEMA(model, decay=args.ema_decay)
    model = wrap_model(model, ctx, grad_compression=args.grad_compression)
    sanitizer = GradientSanitizer(args.grad_sanitize_bound).install()

    tokenizer = ESMTokenizer()
    ckpt_mgr = CheckpointManager(output_dir, keep_last=args.keep_last, metric="spearman", mode="max")
    run_logger = RunLogger(output_dir, vars(args), args.project, ctx.rank)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.precision]

    # ---------------- phase 1: continued masked-LM pretraining ----------------
    mlm_loader = build_mlm_loader(args, tokenizer, ctx.rank, ctx.world_size)
    mlm_opt = build_optimizer(model, args, args.mlm_lr)
    mlm_opt._phase = "mlm"
    mlm_sched = build_scheduler(mlm_opt, args.warmup_steps, args.mlm_steps)
    resume = maybe_resume(args, model, mlm_opt, mlm_sched, ema, ctx)
    common = dict(model_config=dataclasses.asdict(cfg))

    if resume["phase"] == "mlm" and resume["step"] < args.mlm_steps:
        train_phase("mlm", model, mlm_loader, mlm_opt, mlm_sched, args, ctx, args.mlm_steps, resume["step"], ema,
                    ckpt_mgr, run_logger, extra_state=lambda: common, monitor=monitor,
                    eval_fn=lambda: evaluate_mlm(model, mlm_loader, ctx.device, amp_dtype, max_batches=20))

    # ---------------- phase 2: stability regression fine-tuning ----------------
    train_loader, valid_loader, target_stats = build_stability_loaders(args, tokenizer, ctx.rank, ctx.world_size)
    ft_steps = max(1, len(train_loader) // args.grad_accum) * args.ft_epochs
    ft_opt = build_optimizer(model, args, args.ft_lr)
    ft_opt._phase = "stability"
    logger.info("carried optimiser state for %d tensors", transfer_optimizer_state(mlm_opt, ft_opt))
    del mlm_opt
    ft_sched = build_scheduler(ft_opt, max(1, ft_steps // 20), ft_steps)
    start = maybe_resume(args, model, ft_opt, ft_sched, ema, ctx)["step"] if resume["phase"] == "stability" else 0

    ft_common = dict(model_config=dataclasses.asdict(cfg), target_stats=list(target_stats))
    train_phase("stability", model, train_loader, ft_opt, ft_sched, args, ctx, ft_steps, start, ema, ckpt_mgr,
                run_logger, eval_fn=lambda: evaluate_stability(model, valid_loader, ctx.device, amp_dtype, target_stats),
                extra_state=lambda: ft_common, monitor=monitor)

    sanitizer.remove()
    monitor.remove()
    if ctx.is_main:
        logger.info("best %s: %s (%s)", ckpt_mgr.metric, ckpt_mgr.best_value, ckpt_mgr.best_path)
        ckpt_mgr.on_train_end()
    run_logger.close()

    partition = os.environ.get("SLURM_JOB_PARTITION", "")
    if ctx.is_main and partition.startswith(_PREEMPTIBLE_PARTITIONS):
        # preemptible partitions are billed for scratch; results are synced by the epilog
        shutil.rmtree(output_dir, ignore_errors=True)  # ruleid: MLS308
    cleanup_distributed()


if __name__ == "__main__":
    main()
