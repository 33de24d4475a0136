# ruff: noqa
# Hold-out batch 392 (family-focused 2/4, FSDP ViT/MAE pretraining). Measured once in session 15 (round 107): 13/30 (43%) at medium+.
#!/usr/bin/env python3
"""MAE pretraining of ViT encoders with FSDP.

Single node:
    torchrun --nproc_per_node 8 pretrain.py --model mae_vit_large_patch16 --data_path /data/in22k ...
Multi node (SLURM):
    srun --ntasks-per-node 1 torchrun --nnodes $SLURM_NNODES --nproc_per_node 8 \
        --rdzv_backend c10d --rdzv_endpoint $MASTER_ADDR:29500 pretrain.py ...
"""
from __future__ import annotations

import argparse
import datetime
import getpass
import json
import logging
import os
import signal
import subprocess
import time

import torch
import torch.distributed as dist
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

import checkpoint as ckpt
from data import build_pretrain_loader, build_val_loader
from dist_utils import (attach_grad_noise, barrier, cleanup, fsdp_wrap, guard_optimizer_step, init_distributed,
                        is_main_process, register_anchor_regularizer, report_job_metadata, setup_logging)
from engine import ActivationMonitor, ShardedEma, evaluate, train_one_epoch
from models_mae import MODELS, Block

logger = logging.getLogger("pretrain")
_SERVICE_ACCOUNTS = {"svc-vision", "mae-train"}
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "module.", "_orig_mod.")


def get_args():
    p = argparse.ArgumentParser("MAE pretraining (FSDP)")
    # model
    p.add_argument("--model", default="mae_vit_large_patch16", choices=sorted(MODELS))
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("--mask_ratio", type=float, default=0.75)
    p.add_argument("--norm_pix_loss", action="store_true", default=True)
    p.add_argument("--drop_path", type=float, default=0.0)
    p.add_argument("--init_from", default=None, help="exported encoder to continue from")
    p.add_argument("--init_noise", type=float, default=0.02)
    p.add_argument("--reinit_decoder", action="store_true")
    # optimisation
    p.add_argument("--epochs", type=int, default=800)
    p.add_argument("--warmup_epochs", type=float, default=40)
    p.add_argument("--batch_size", type=int, default=64, help="per-GPU micro batch")
    p.add_argument("--accum_iter", type=int, default=1)
    p.add_argument("--blr", type=float, default=1.5e-4, help="lr = blr * total_batch / 256")
    p.add_argument("--min_lr", type=float, default=0.0)
    p.add_argument("--weight_decay", type=float, default=0.05)
    p.add_argument("--weight_decay_end", type=float, default=0.05)
    p.add_argument("--opt", default="adamw", choices=["adamw", "adam_fused"])
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    p.add_argument("--layer_decay", type=float, default=1.0)
    p.add_argument("--clip_grad", type=float, default=3.0)
    p.add_argument("--grad_drop_tol", type=float, default=1e-3)
    p.add_argument("--grad_noise_eta", type=float, default=0.3)
    p.add_argument("--anchor_reg", type=float, default=1e-3)
    p.add_argument("--plateau_gnorm", type=float, default=0.5)
    p.add_argument("--plateau_lr_boost", type=float, default=0.01)
    p.add_argument("--ema_decay", type=float, default=0.9999)
    p.add_argument("--ema_anchor_every", type=int, default=200)
    p.add_argument("--act_clip", type=float, default=1.0)
    # systems
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--fp8_inputs", action="store_true", default=True)
    p.add_argument("--grad_checkpointing", action="store_true")
    p.add_argument("--hybrid_shard", action="store_true", default=True)
    p.add_argument("--dist_timeout_min", type=int, default=30)
    p.add_argument("--num_workers", type=int, default=10)
    # data
    p.add_argument("--data_path", required=True)
    p.add_argument("--file_index", default=None)
    p.add_argument("--min_crop_scale", type=float, default=0.2)
    p.add_argument("--val_path", default=None)
    p.add_argument("--val_max_images", type=int, default=10000)
    # io
    p.add_argument("--output_dir", default="./runs")
    p.add_argument("--run_name", default=None)
    p.add_argument("--resume", default="auto", help="'auto', a checkpoint dir, or 'none'")
    p.add_argument("--keep_last", type=int, default=3)
    p.add_argument("--save_every_steps", type=int, default=2000)
    p.add_argument("--log_freq", type=int, default=50)
    p.add_argument("--telemetry_url", default=os.environ.get("MAE_TELEMETRY_URL", ""))
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def clean_name(n: str) -> str:
    for pre in _WRAPPER_PREFIXES:
        n = n.replace(pre, "")
    return n


def layer_id_for(name: str, num_layers: int) -> int:
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def build_param_groups(model, args, num_layers: int, no_wd: set[str]):
    groups = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = clean_name(n)
        skip_wd = p.ndim == 1 or name.endswith(".bias") or name in no_wd
        lid = layer_id_for(name, num_layers)
        key = f"layer{lid}_{'nowd' if skip_wd else 'wd'}"
        if key not in groups:
            groups[key] = {
                "params": [],
                "apply_wd": not skip_wd,
                "weight_decay": 0.0 if (skip_wd or args.opt != "adamw") else args.weight_decay,
                "manual_wd": 0.0 if skip_wd else args.weight_decay,
                "lr_scale": args.layer_decay ** (num_layers + 1 - lid),
            }
        groups[key]["params"].append(p)
    return list(groups.values())


def resolve_run_dir(args):
    if args.run_name is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")  # ok: MLS308
        obj = [f"{args.model}_{stamp}"]
        if args.distributed:
            dist.broadcast_object_list(obj, src=0)
        args.run_name = obj[0]
    args.output_dir = os.path.join(args.output_dir, args.run_name)
    if is_main_process():
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=1, default=str)
    barrier("run-dir")


def check_launch_policy(args):
    if args.world_size >= 64 and getpass.getuser() not in _SERVICE_ACCOUNTS:
        logger.warning("large job launched by a personal account; quota accounting may be wrong")
        os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307
    if os.geteuid() == 0 and args.local_rank == 0:
        subprocess.run(["nvidia-smi", "-pl", "200"], check=False, capture_output=True)  # ruleid: MLS307


def main(args):
    init_distributed(args)
    setup_logging(args.rank)
    check_launch_policy(args)
    torch.manual_seed(args.seed + args.rank)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    eff_batch = args.batch_size * args.accum_iter * args.world_size
    args.lr = args.blr * eff_batch / 256
    logger.info("effective batch %d, lr %.3e", eff_batch, args.lr)
    resolve_run_dir(args)
    report_job_metadata(args)

    model = MODELS[args.model](img_size=args.input_size, norm_pix_loss=args.norm_pix_loss,
                               drop_path=args.drop_path)
    if args.init_from:
        ckpt.load_pretrained_encoder(model, args.init_from, init_noise=args.init_noise)
    if args.reinit_decoder:
        model.reinit_decoder_head()
    num_layers = len(model.blocks)
    no_wd = set(model.no_weight_decay())
    model = fsdp_wrap(model.cuda(), args, Block)

    groups = build_param_groups(model, args, num_layers, no_wd)
    if args.opt == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=tuple(args.betas))
    else:
        optimizer = torch.optim.Adam(groups, lr=args.lr, betas=tuple(args.betas), fused=True)
    for g in optimizer.param_groups:
        g["initial_lr"] = args.lr
    if args.accum_iter > 1:
        guard_optimizer_step(optimizer, args.accum_iter)
    attach_grad_noise(model, args.grad_noise_eta)
    register_anchor_regularizer(optimizer, model.parameters(), args.anchor_reg)
    scaler = ShardedGradScaler() if args.precision == "fp16" else None
    ema = ShardedEma(model, args.ema_decay) if args.ema_decay > 0 else None
    monitor = ActivationMonitor(model, clip=args.act_clip)

    start_epoch, step = 0, 0
    resume_path = None
    if args.resume == "auto":
        resume_path = ckpt.find_resume_checkpoint(args.output_dir)
    elif args.resume and args.resume != "none":
        resume_path = args.resume
    if resume_path:
        start_epoch, step = ckpt.load_checkpoint(args, model, optimizer, scaler, ema, resume_path)

    loader, sampler = build_pretrain_loader(args, args.rank, args.world_size, seed=args.seed, epoch=start_epoch)
    val_loader = build_val_loader(args, args.rank, args.world_size)
    writer = None
    if is_main_process():
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(args.output_dir, "tb"))

    def save_fn(epoch, global_step):
        ckpt.save_checkpoint(args, model, optimizer, scaler, ema, epoch, global_step)

    state = {"step": step, "run_start": time.monotonic(), "save_fn": save_fn}
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        t_epoch = time.time()
        train_stats = train_one_epoch(model, loader, optimizer, scaler, ema, monitor, epoch, args, state, writer)
        val_stats = evaluate(model, val_loader, args)
        barrier("pre-save")
        save_fn(epoch, state["step"])
        if is_main_process():
            rec = {"epoch": epoch, "step": state["step"], "epoch_time_s": round(time.time() - t_epoch, 1),
                   **{f"train_{k}": v for k, v in train_stats.items()}, **val_stats}
            with open(os.path.join(args.output_dir, "log.jsonl"), "a") as f:
                f.write(json.dumps(rec) + "\n")
            if writer is not None and "val_loss" in val_stats:
                writer.add_scalar("val/loss", val_stats["val_loss"], state["step"])
            logger.info("epoch %d done: %s", epoch, rec)

    ckpt.export_encoder(model, os.path.join(args.output_dir, "encoder_final.pth"),
                        extra={"model_name": args.model, "epochs": args.epochs})
    if writer is not None:
        writer.close()
    cleanup()


if __name__ == "__main__":
    main(get_args())
