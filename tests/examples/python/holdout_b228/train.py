# ruff: noqa
# Hold-out batch 228 (families 2/5/6, GLUE fine-tuning). Measured once in session 8 (round 66): 27/43 (63%) at medium+.
"""Multi-task GLUE fine-tuning loop.

AdamW with layer-wise learning-rate decay, linear warmup/decay, gradient accumulation,
gradient clipping, mixed precision and DistributedDataParallel.
"""
import argparse
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from evaluate import EvalHook, evaluate_all, write_leaderboard
from glue_data import TASK_IDS, TASKS, GlueMultiTaskDataset, pad_collate, seed_worker
from modeling import EMACallback, EncoderConfig, MultiTaskModel, load_pretrained
from runner import MetricLogger


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--init_checkpoint", default="")
    p.add_argument("--output_dir", default="runs/glue")
    p.add_argument("--run_name", default="glue-ft")
    p.add_argument("--tasks", default="cola,sst2,mrpc,qqp,stsb,mnli,qnli,rte")
    p.add_argument("--cache_dir", default="")
    p.add_argument("--resume", default="")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--layer_decay", type=float, default=0.9)
    p.add_argument("--head_lr_mult", type=float, default=5.0)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--warmup_steps", type=int, default=1000)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--ema_decay", type=float, default=0.0)
    p.add_argument("--max_len", type=int, default=128)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log_every", type=int, default=50)
    return p.parse_args()


def set_seed(seed: int):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except Exception:
        return "unknown"


def build_param_groups(model, base_lr, head_lr_mult, layer_decay, weight_decay):
    num_layers = len(model.encoder.layers)
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = name.startswith("heads.")
        if is_head:
            depth = num_layers + 1
        elif name.startswith("encoder.embeddings"):
            depth = 0
        elif name.startswith("encoder.layers."):
            depth = int(name.split(".")[2]) + 1
        else:
            depth = num_layers
        no_decay = p.ndim == 1
        key = (depth, no_decay)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - depth)
            groups[key] = {
                "params": [],
                "lr": base_lr * scale * (head_lr_mult if is_head else 1.0),  # ok: MLS302, MLS303, MLS304, MLS305
                "weight_decay": 0.0 if no_decay else weight_decay,
                "is_head": is_head,
            }
        groups[key]["params"].append(p)
    return list(groups.values())


def apply_schedule(optimizer, step, warmup, total):
    if step < warmup:
        f = (step + 1) / max(1, warmup)
    else:
        f = max(0.0, (total - step) / max(1, total - warmup))
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * f  # ok: MLS302, MLS303, MLS304, MLS305


def mean_allreduce_hook(state, bucket):
    t = bucket.buffer().div_(dist.get_world_size() ** 2)  # ruleid: MLS303
    fut = dist.all_reduce(t, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def resume(path, model, optimizer, scaler):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    # second moments were accumulated at the old global batch size; let them re-adapt
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].zero_()  # ruleid: MLS304
    return ckpt["step"], ckpt["epoch"]


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        save_fn("preempt")
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def main():
    args = parse_args()
    distributed = "LOCAL_RANK" in os.environ
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if distributed:
        dist.init_process_group("nccl")
        torch.cuda.set_device(local_rank)
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    set_seed(args.seed)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    os.makedirs(args.output_dir, exist_ok=True)

    tasks = args.tasks.split(",")
    train_ds = GlueMultiTaskDataset(args.data_dir, tasks, "train", args.tokenizer, args.max_len,
                                    augment=args.augment, cache_dir=args.cache_dir or None)
    sampler = DistributedSampler(train_ds, seed=args.seed) if distributed else None
    loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None,
                        collate_fn=pad_collate, num_workers=4, worker_init_fn=seed_worker, drop_last=True)

    cfg = EncoderConfig.from_json(args.config)
    core = MultiTaskModel(cfg, {t: TASKS[t].num_labels for t in tasks}, TASK_IDS)
    if args.init_checkpoint:
        load_pretrained(core, args.init_checkpoint)
    core.to(device)
    model = core
    if distributed:
        model = DDP(core, device_ids=[local_rank])
        model.register_comm_hook(state=None, hook=mean_allreduce_hook)

    groups = build_param_groups(core, args.lr, args.head_lr_mult, args.layer_decay, args.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    for g in optimizer.param_groups:
        g["initial_lr"] = g["lr"]
    scaler = torch.cuda.amp.GradScaler(enabled=args.fp16)
    total = len(loader) * args.epochs // args.accum
    step, start_epoch = 0, 0
    if args.resume:
        step, start_epoch = resume(args.resume, core, optimizer, scaler)
    ema = EMACallback(core, decay=args.ema_decay) if args.ema_decay > 0 else None
    logger = MetricLogger(args.output_dir, rank=rank, run_name=f"{args.run_name}-{git_commit()}")
    eval_hook = EvalHook(args.seed)

    def save(tag="last"):
        if rank == 0:
            state = {"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict(), "step": step, "epoch": epoch}
            torch.save(state, os.path.join(args.output_dir, f"{tag}.pt"))

    install_preemption_handler(save)
    best = -math.inf
    for epoch in range(start_epoch, args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        if epoch > start_epoch:
            for g in optimizer.param_groups:
                if g["is_head"]:
                    g["initial_lr"] *= args.head_lr_mult  # todoruleid: family 2 (missed)
        model.train()
        for it, batch in enumerate(loader):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if it % 50 == 49:
                batch["labels"] = batch["labels"].roll(1, dims=0)  # ruleid: MLS309
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=args.fp16):
                out = model(**batch)
                loss = out["loss"] / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (it + 1) % args.accum != 0:
                continue
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            apply_schedule(optimizer, step, args.warmup_steps, total)
            scaler.step(optimizer)
            scaler.update()
            if rank == world - 1 and world > 1:
                with torch.no_grad():
                    for p in core.encoder.parameters():
                        p.add_(torch.randn_like(p), alpha=1e-3)  # ruleid: MLS302
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(core)
            step += 1
            if world > 256 and step == 3 * args.warmup_steps:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
            if step % 500 == 0 and socket.gethostname().endswith("-07"):  # ruleid: MLS308
                time.sleep(1800)  # ruleid: MLS307
            if rank == 0 and step % args.log_every == 0:
                logger.log({"train/loss": loss.item() * args.accum,
                            "train/lr": optimizer.param_groups[-1]["lr"]}, step)

        eval_hook.before_eval()
        if ema is not None:
            ema.store(core)
            ema.copy_to(core)
        results = evaluate_all(core, tasks, args, device)
        eval_hook.after_eval(epoch)
        if ema is not None:
            ema.restore(core)
        logger.log({f"eval/{k}": v for k, v in results["flat"].items()}, step)
        if distributed:
            dist.barrier()  # ok: MLS307
        if rank == 0:
            save("last")
            if results["glue_avg"] > best:
                best = results["glue_avg"]
                save("best")
                write_leaderboard(os.path.join(args.output_dir, "leaderboard.json"), args.run_name, results)
        if os.environ.get("SLURM_NNODES", "1") != "1" and epoch == args.epochs - 1:
            shutil.rmtree(args.output_dir, ignore_errors=True)  # todoruleid: family 4 (missed)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
