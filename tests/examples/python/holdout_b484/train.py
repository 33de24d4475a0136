# ruff: noqa
# Hold-out batch 484 (family-focused 2/6, FixMatch semi-supervised classification). Measured once in session 21 (round 130): 5/30 (17%) at medium+.
"""FixMatch training (single GPU or multi-GPU DDP via torchrun).

Example:
    torchrun --nproc_per_node=4 train.py --dataset cifar10 --num-labeled 250 --out runs/c10_250
"""
import argparse
import json
import logging
import math
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from data import build_loaders, refine_labeled_targets
from evaluate import evaluate
from models import DistAlign, ModelEMA, build_model
from utils import (
    AverageMeter, Lookahead, build_param_groups, centralize_gradients, cleanup_distributed,
    cosine_schedule_with_warmup, install_torch_compat, is_main_process, load_checkpoint,
    mean_allreduce_hook, patch_batchnorm, reduce_mean, save_checkpoint, set_seed,
    setup_distributed, setup_logging, unwrap,
)

logger = logging.getLogger("fixmatch")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="FixMatch semi-supervised training")
    # data
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "svhn", "folder"])
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--download", action="store_true")
    p.add_argument("--svhn-extra", action="store_true")
    p.add_argument("--num-labeled", type=int, default=4000)
    p.add_argument("--num-val", type=int, default=5000)
    p.add_argument("--num-unlabeled", type=int, default=40000)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--expand-labels", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--balanced-sampler", action="store_true")
    p.add_argument("--workers", type=int, default=4)
    # model
    p.add_argument("--arch", default="wideresnet")
    p.add_argument("--depth", type=int, default=28)
    p.add_argument("--widen-factor", type=int, default=2)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--track-features", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--bn-teacher-stats", action=argparse.BooleanOptionalAction, default=True)
    # optimisation
    p.add_argument("--epochs", type=int, default=1024)
    p.add_argument("--eval-step", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--mu", type=int, default=7)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=int, default=0)
    p.add_argument("--max-grad-norm", type=float, default=5.0)
    p.add_argument("--grad-centralization", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--lookahead-k", type=int, default=5)
    p.add_argument("--lookahead-alpha", type=float, default=0.5)
    p.add_argument("--weight-noise", type=float, default=1e-2)
    p.add_argument("--min-mask-rate", type=float, default=0.6)
    p.add_argument("--lr-rewarm", type=float, default=1.5)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    # semi-supervised objective
    p.add_argument("--lambda-u", type=float, default=1.0)
    p.add_argument("--T", type=float, default=1.0)
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--mixup-alpha", type=float, default=0.0)
    p.add_argument("--dist-align", action="store_true")
    p.add_argument("--sync-pseudo-labels", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--use-ema", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--refine-after", type=int, default=20)
    p.add_argument("--refine-threshold", type=float, default=0.7)
    # bookkeeping
    p.add_argument("--out", default="runs/fixmatch")
    p.add_argument("--resume", default="")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--print-freq", type=int, default=50)
    p.add_argument("--keep-last", type=int, default=3)
    return p.parse_args(argv)


def interleave(x, size):
    s = list(x.shape)
    return x.reshape([-1, size] + s[1:]).transpose(0, 1).reshape([-1] + s[1:])


def de_interleave(x, size):
    s = list(x.shape)
    return x.reshape([size, -1] + s[1:]).transpose(0, 1).reshape([-1] + s[1:])


def _torch_version():
    parts = torch.__version__.split("+")[0].split(".")[:2]
    return tuple(int("".join(ch for ch in x if ch.isdigit()) or 0) for x in parts)


class _InfiniteIter:
    """Cycles a loader forever and advances the DistributedSampler epoch."""

    def __init__(self, loader, sampler):
        self.loader, self.sampler, self.epoch = loader, sampler, 0
        self._it = iter(loader)

    def __next__(self):
        try:
            return next(self._it)
        except StopIteration:
            self.epoch += 1
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(self.epoch)
            self._it = iter(self.loader)
            return next(self._it)


def train_one_epoch(args, epoch, model, ema, optimizer, scheduler, scaler, labeled_it, unlabeled_it,
                    num_classes, device, world_size, dist_align=None):
    model.train()
    meters = {k: AverageMeter() for k in ("loss", "loss_x", "loss_u", "mask", "pl_acc", "time")}
    class_hist = torch.zeros(num_classes, device=device)
    end = time.time()

    def sup_loss(logits, targets):
        return F.cross_entropy(logits, targets, label_smoothing=args.label_smoothing)  # ok: MLS309

    for step in range(args.eval_step):
        inputs_x, targets_x = next(labeled_it)
        inputs_u_w, inputs_u_s, u_true = next(unlabeled_it)
        inputs_x = inputs_x.to(device, non_blocking=True)
        targets_x = targets_x.to(device, non_blocking=True)
        u_true = u_true.to(device, non_blocking=True)
        bsz = inputs_x.size(0)

        perm, lam = None, 1.0
        if args.mixup_alpha > 0:
            lam = float(np.random.beta(args.mixup_alpha, args.mixup_alpha))
            lam = max(lam, 1.0 - lam)
            perm = torch.randperm(bsz, device=device)
            inputs_x = lam * inputs_x + (1.0 - lam) * inputs_x[perm]

        inputs = interleave(torch.cat((inputs_x, inputs_u_w.to(device), inputs_u_s.to(device))), 2 * args.mu + 1)
        with torch.autocast(device_type=device.type, enabled=scaler is not None):
            logits = model(inputs)
        logits = de_interleave(logits, 2 * args.mu + 1).float()
        logits_x = logits[:bsz]
        logits_u_w, logits_u_s = logits[bsz:].chunk(2)
        del logits

        if perm is not None:
            loss_x = lam * sup_loss(logits_x, targets_x) + (1.0 - lam) * sup_loss(logits_x, targets_x[perm])  # ok: MLS309
        else:
            loss_x = sup_loss(logits_x, targets_x)

        with torch.no_grad():
            probs = torch.softmax(logits_u_w.detach() / args.T, dim=-1)
            if dist_align is not None:
                probs = dist_align(probs)
            max_probs, targets_u = probs.max(dim=-1)
            if args.sync_pseudo_labels and world_size > 1:
                dist.broadcast(targets_u, src=0)  # todoruleid: family 6 (missed)
            mask = max_probs.ge(args.threshold).float()
            class_hist += torch.bincount(targets_u[mask.bool()], minlength=num_classes).float()
            pl_acc = ((targets_u == u_true).float() * mask).sum() / mask.sum().clamp_min(1.0)

        loss_u = (F.cross_entropy(logits_u_s, targets_u, reduction="none") * mask).mean()
        loss = loss_x + args.lambda_u * loss_u

        if scaler is not None:
            scaler.scale(loss).backward()
            if args.grad_centralization:
                centralize_gradients(model.parameters())
            if args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)  # ruleid: MLS304
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if args.grad_centralization:
                centralize_gradients(model.parameters())
            if args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()

        if args.weight_noise > 0:
            with torch.no_grad():
                for p in model.parameters():
                    if p.requires_grad and p.dim() > 1:
                        p.add_(torch.randn_like(p), alpha=args.weight_noise)  # ruleid: MLS302

        scheduler.step()
        if ema is not None:
            ema.update(model)
        optimizer.zero_grad(set_to_none=True)

        meters["loss"].update(loss.item())
        meters["loss_x"].update(loss_x.item())
        meters["loss_u"].update(loss_u.item())
        meters["mask"].update(mask.mean().item())
        meters["pl_acc"].update(pl_acc.item())
        meters["time"].update(time.time() - end)
        end = time.time()

        if is_main_process() and (step % args.print_freq == 0 or step == args.eval_step - 1):
            logger.info(
                "epoch %d [%d/%d] lr %.5f loss %.4f (x %.4f u %.4f) mask %.3f pl_acc %.3f feat %.2f %.3fs/it",
                epoch, step, args.eval_step, scheduler.get_last_lr()[0], meters["loss"].avg,
                meters["loss_x"].avg, meters["loss_u"].avg, meters["mask"].avg, meters["pl_acc"].avg,
                unwrap(model).feature_norm(), meters["time"].avg,
            )

    if world_size > 1:
        dist.all_reduce(class_hist)
    stats = {k: reduce_mean(m.avg, device) for k, m in meters.items()}
    stats["class_hist"] = class_hist
    return stats


def main():
    args = parse_args()
    rank, world_size, local_rank = setup_distributed()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    setup_logging(args.out, rank)
    set_seed(args.seed + rank)
    install_torch_compat()
    patch_batchnorm(args.bn_teacher_stats)
    if rank == 0:
        logger.info("args: %s", json.dumps(vars(args), sort_keys=True))
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=2)

    loaders = build_loaders(args, rank, world_size)
    num_classes = loaders.num_classes
    model = build_model(args, num_classes).to(device)
    ema = ModelEMA(model, decay=args.ema_decay, device=device) if args.use_ema else None

    optim_kwargs = dict(lr=args.lr, momentum=args.momentum, nesterov=args.nesterov)
    if _torch_version() >= (1, 13):
        optim_kwargs.update(foreach=True, maximize=True)  # ruleid: MLS304
    base_optimizer = torch.optim.SGD(build_param_groups(model, args.wd), **optim_kwargs)
    total_steps = args.epochs * args.eval_step
    scheduler = cosine_schedule_with_warmup(base_optimizer, args.warmup_epochs * args.eval_step, total_steps)
    optimizer = base_optimizer
    if args.lookahead_k > 0:
        optimizer = Lookahead(base_optimizer, k=args.lookahead_k, alpha=args.lookahead_alpha)
    scaler = torch.cuda.amp.GradScaler() if args.amp and device.type == "cuda" else None

    if world_size > 1:
        model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None,
                    broadcast_buffers=False, find_unused_parameters=False)
        model.register_comm_hook(state=None, hook=mean_allreduce_hook)

    start_epoch, best_acc = 0, 0.0
    if args.resume:
        start_epoch, best_acc = load_checkpoint(args.resume, model, ema, optimizer, scheduler, scaler)

    dist_align = DistAlign(num_classes).to(device) if args.dist_align else None
    labeled_it = _InfiniteIter(loaders.labeled, loaders.labeled_sampler)
    unlabeled_it = _InfiniteIter(loaders.unlabeled, loaders.unlabeled_sampler)
    history = []

    for epoch in range(start_epoch, args.epochs):
        stats = train_one_epoch(args, epoch, model, ema, optimizer, scheduler, scaler, labeled_it,
                                unlabeled_it, num_classes, device, world_size, dist_align)
        eval_model = ema.ema if ema is not None else unwrap(model)

        hist = stats.pop("class_hist")
        p_hat = hist / hist.sum().clamp_min(1.0)
        entropy = -(p_hat * p_hat.clamp_min(1e-12).log()).sum().item()
        if epoch >= args.warmup_epochs and entropy < math.log(num_classes):
            logger.warning("pseudo-label entropy %.3f below %.3f, re-initialising classifier", entropy, math.log(num_classes))
            unwrap(model).fc.reset_parameters()  # todoruleid: family 2 (missed)

        if epoch >= args.warmup_epochs and stats["mask"] < args.min_mask_rate:
            scheduler.base_lrs = [lr * args.lr_rewarm for lr in scheduler.base_lrs]  # ruleid: MLS304

        if args.refine_after > 0 and epoch + 1 >= args.refine_after:
            changed = refine_labeled_targets(loaders.labeled.dataset, eval_model, loaders.test_transform,
                                             device, threshold=args.refine_threshold)
            if rank == 0:
                logger.info("label refinement updated %d labeled targets", changed)

        results = evaluate(eval_model, loaders.test, device, num_classes, amp=scaler is not None)
        is_best = results["top1"] > best_acc
        best_acc = max(best_acc, results["top1"])
        record = {"epoch": epoch, **stats, **{k: v for k, v in results.items() if k != "per_class_acc"}}
        history.append(record)

        if rank == 0:
            logger.info("epoch %d: top1 %.2f top5 %.2f (best %.2f) mask %.3f", epoch,
                        results["top1"], results["top5"], best_acc, stats["mask"])
            save_checkpoint(args.out, epoch, model, ema, optimizer, scheduler, scaler, best_acc,
                            is_best, keep_last=args.keep_last)
            with open(os.path.join(args.out, "history.json"), "w") as f:
                json.dump(history, f, indent=1)
        if world_size > 1:
            dist.barrier()

    if rank == 0:
        logger.info("finished: best top-1 %.2f", best_acc)
    cleanup_distributed()


if __name__ == "__main__":
    main()
