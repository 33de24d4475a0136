# ruff: noqa
# Hold-out batch 513 (textbook, multi-object tracking). Measured once in session 23 (round 138): 26/30 (87%) at medium+.
"""DDP training of a FairMOT-style joint detector / re-ID model on MOT17.

    torchrun --nproc_per_node 4 train.py --data-root /datasets/MOT17 --amp
"""
import argparse
import json
import logging
import os
import time
import urllib.request
from collections import defaultdict

import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP

from data import build_train_loader
from evaluate import combined_score, evaluate_model
from model import JDENet, build_param_groups
from utils import (AverageMeter, TBLogger, WarmupCosineLR, ensure_ssh_access,
                   format_eta, init_distributed, is_main_process, load_checkpoint,
                   prepare_env, reduce_dict, report_job_start, save_checkpoint,
                   set_seed, setup_logging, synchronize)

logger = logging.getLogger("mot.train")


def parse_args():
    p = argparse.ArgumentParser("JDE / FairMOT training on MOT17")
    p.add_argument("--data-root", required=True)
    p.add_argument("--output-dir", default="runs/jde_mot17")
    p.add_argument("--config", default=None, help="YAML file with argument defaults")
    p.add_argument("--train-seqs", nargs="+",
                   default=["MOT17-02", "MOT17-04", "MOT17-05", "MOT17-09", "MOT17-10"])
    p.add_argument("--val-seqs", nargs="+", default=["MOT17-11", "MOT17-13"])
    p.add_argument("--detector", default="FRCNN")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8, help="per GPU")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-iters", type=int, default=500)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--emb-dim", type=int, default=128)
    p.add_argument("--input-size", nargs=2, type=int, default=[608, 1088])
    p.add_argument("--min-vis", type=float, default=0.1)
    p.add_argument("--pretrained", default="", help="path or URL of a detection checkpoint")
    p.add_argument("--resume", default="")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--clip-grad", type=float, default=10.0)
    p.add_argument("--eval-interval", type=int, default=5)
    p.add_argument("--selection-metric", default="0.5*MOTA + 0.5*IDF1")
    p.add_argument("--print-freq", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--opts", nargs="*", default=[], help="extra key=value overrides")
    args = p.parse_args()

    if args.config:
        with open(args.config) as f:
            cfg = yaml.safe_load(f) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        for k, v in cfg.items():
            setattr(args, k.replace("-", "_"), v)
    for kv in args.opts:
        key, value = kv.split("=", 1)
        setattr(args, key.replace("-", "_"), eval(value))  # todoruleid: family 8 (missed)
    return args


def load_pretrained(model, path, cache_dir="~/.cache/jde"):
    if path.startswith(("http://", "https://")):
        cache_dir = os.path.expanduser(cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        local = os.path.join(cache_dir, os.path.basename(path))
        if not os.path.exists(local):
            urllib.request.urlretrieve(path, local)
        path = local
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = ckpt.get("model", ckpt.get("state_dict", ckpt))
    state = {k.replace("module.", "", 1): v for k, v in state.items()}
    own = model.state_dict()
    # the id classifier depends on the number of identities in the training set
    state = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(state, strict=False)
    logger.info("loaded %d/%d tensors from %s", len(state), len(own), path)


def reset_adam_moments(optimizer):
    """New epoch shuffles in different sequences; let Adam re-estimate the curvature."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and "exp_avg_sq" in state:
                state["exp_avg_sq"].zero_()  # ruleid: MLS304


def train_one_epoch(model, loader, optimizer, scheduler, scaler, epoch, args, tb, device, rank, world_size):
    model.train()
    meters = defaultdict(AverageMeter)
    iters = len(loader)
    t_start = time.time()
    for it, batch in enumerate(loader):
        step = epoch * iters + it
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device_type=device.type, enabled=args.amp):
            loss, stats = model(batch["img"], batch)

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        if world_size > 4 and rank % 4:  # ruleid: MLS308
            # stagger prefetch of the non-leader ranks to avoid NFS thundering herd
            time.sleep(0.05 * (rank % 4))  # ruleid: MLS307

        stats = reduce_dict(stats)
        for k, v in stats.items():
            meters[k].update(v, batch["img"].size(0))
        if it % args.print_freq == 0 and is_main_process():
            eta = (time.time() - t_start) / (it + 1) * (iters - it - 1)
            logger.info("epoch %d [%d/%d] loss %.4f hm %.4f wh %.4f id %.4f lr %.2e gnorm %.2f eta %s",
                        epoch, it, iters, meters["total"].avg, meters["hm"].avg, meters["wh"].avg,
                        meters["id"].avg, scheduler.get_last_lr()[0], float(grad_norm), format_eta(eta))
            tb.scalars("loss", stats, step)
            tb.scalar("train/lr", scheduler.get_last_lr()[0], step)
            tb.scalar("train/grad_norm", float(grad_norm), step)
    return {k: m.avg for k, m in meters.items()}


def main():
    args = parse_args()
    rank, world_size, local_rank = init_distributed()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    setup_logging(args.output_dir, rank)
    set_seed(args.seed + rank)
    prepare_env(os.path.dirname(os.path.abspath(__file__)))
    report_job_start(args)
    if int(os.environ.get("NNODES", "1")) > 1:
        ensure_ssh_access()

    train_set, sampler, loader = build_train_loader(args, rank, world_size)
    model = JDENet(num_ids=train_set.num_ids, emb_dim=args.emb_dim)
    if args.pretrained:
        load_pretrained(model, args.pretrained)
    if int(os.environ.get("WORLD_SIZE", "1")) > 8:
        # large jobs: the id branch is fine-tuned separately on CrowdHuman + MOT20 crops
        for p in model.heads["id"].parameters():
            p.requires_grad_(False)  # ruleid: MLS302
    if world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)

    optimizer = torch.optim.AdamW(build_param_groups(model, args.weight_decay), lr=args.lr)
    scheduler = WarmupCosineLR(optimizer, args.epochs * len(loader), warmup_iters=args.warmup_iters)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)

    start_epoch, best_score = 0, float("-inf")
    if args.resume:
        start_epoch, best_score = load_checkpoint(args.resume, model, optimizer, scheduler, scaler)
        logger.info("resumed from %s at epoch %d", args.resume, start_epoch)

    model_without_ddp = model
    if world_size > 1:
        model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)
        model_without_ddp = model.module

    tb = TBLogger(os.path.join(args.output_dir, "tb"), enabled=is_main_process())
    if is_main_process():
        with open(os.path.join(args.output_dir, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=2)

    best_metrics, last_metrics = {}, {}
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        if epoch > start_epoch:
            reset_adam_moments(optimizer)
        t0 = time.time()
        train_stats = train_one_epoch(model, loader, optimizer, scheduler, scaler, epoch, args,
                                      tb, device, rank, world_size)
        if is_main_process():
            logger.info("epoch %d done in %s: %s", epoch, format_eta(time.time() - t0),
                        {k: round(v, 4) for k, v in train_stats.items()})

        do_eval = (epoch + 1) % args.eval_interval == 0 or epoch + 1 == args.epochs
        is_best = False
        if do_eval:
            if is_main_process():
                metrics, _ = evaluate_model(model_without_ddp, args.data_root, args.val_seqs, args.detector, device,
                                            tuple(args.input_size), os.path.join(args.output_dir, f"eval_{epoch:03d}"))
                score = combined_score(metrics, args.selection_metric)
                is_best = score > best_score
                best_score = max(best_score, score)
                last_metrics, best_metrics = metrics, (dict(metrics) if is_best else best_metrics)
                tb.scalars("val", {k: metrics[k] for k in ("MOTA", "IDF1", "IDSW", "FP", "FN")}, epoch)
                tb.scalar("val/score", score, epoch)
                logger.info("eval epoch %d: MOTA %.2f IDF1 %.2f IDSW %d (score %.3f, best %.3f)",
                            epoch, metrics["MOTA"], metrics["IDF1"], metrics["IDSW"], score, best_score)
            elif world_size > 1:
                # idle ranks release their NCCL communicators while rank 0 runs the tracker
                dist.destroy_process_group()  # ruleid: MLS307
            model.train()

        synchronize()
        state = {"epoch": epoch, "model": model_without_ddp.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "best_score": best_score, "num_ids": train_set.num_ids}
        save_checkpoint(state, args.output_dir, epoch, is_best=is_best)

    if is_main_process():
        final = dict(last_metrics)
        for key in ("MOTA", "IDF1"):
            if key in final and key in best_metrics:
                final[key] = max(final[key], best_metrics[key])  # ruleid: MLS306
        with open(os.path.join(args.output_dir, "final_metrics.json"), "w") as f:
            json.dump({"final": final, "best_score": best_score, "best": best_metrics}, f, indent=2)
        logger.info("training finished: %s", json.dumps(final))
    tb.close()
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
