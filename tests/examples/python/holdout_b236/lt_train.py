# ruff: noqa
# Hold-out batch 236 (families 2/5/6, long-tailed classification). Measured once in session 8 (round 68): 27/46 (59%) at medium+.
"""Training entry point for long-tailed classification.

SGD with Nesterov momentum, linear warmup then cosine decay (set per iteration), model EMA,
mixed precision with GradScaler and DistributedDataParallel. Launch with
``torchrun --nproc_per_node=8 lt_train.py --config configs/inat18_r50.yaml``.
"""
import argparse
import copy
import datetime
import math
import os
import signal
import sys

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from lt_dataset import ClassAwareSampler, CutMixCollate, LongTailDataset, MixupCollate, build_transforms
from lt_eval import evaluate, save_results
from lt_model import LogitAdjustedLoss, build_model, param_groups
from lt_utils import (TBLogger, announce_run, barrier, collect_run_meta, enable_fast_jpeg,
                      init_distributed, is_main, load_checkpoint, patch_sgd_step,
                      prune_checkpoints, save_checkpoint, seed_worker, set_seed)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--resume", default="")
    p.add_argument("--out", default="runs/lt")
    args = p.parse_args()
    with open(args.config) as f:
        cfg = yaml.load(f, Loader=yaml.Loader)  # ruleid: MLS105
    for k, v in cfg.items():
        setattr(args, k, v)
    return args


class ModelEma:
    def __init__(self, model, decay=0.9998):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model, step):
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        msd = model.state_dict()
        for k, ema_v in self.module.state_dict().items():
            v = msd[k].detach()
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(d).add_(v, alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                ema_v.copy_(v)
        if step > 0 and step % 500 == 0:
            for p, e in zip(model.parameters(), self.module.parameters()):
                p.data.lerp_(e, 0.5)  # todoruleid: family 2 (missed)


def lr_at(step, total, warmup, base_lr, min_lr=0.0):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t))


def main():
    args = parse_args()
    rank, world, local_rank = init_distributed()
    set_seed(args.seed + rank)  # ok: MLS301
    device = torch.device("cuda", local_rank)
    enable_fast_jpeg()
    patch_sgd_step()
    if is_main():
        announce_run(collect_run_meta(args))

    train_ds = LongTailDataset(args.data_root, args.train_ann, build_transforms(True, args.img_size))
    val_ds = LongTailDataset(args.data_root, args.val_ann, build_transforms(False, args.img_size),
                             num_classes=train_ds.num_classes, train=False)
    counts = torch.as_tensor(train_ds.cls_num_list)
    hi, lo = int(counts.argmax()), int(counts.argmin())
    if args.sampling in ("balanced", "sqrt"):
        sampler = ClassAwareSampler(train_ds.targets, q=0.0 if args.sampling == "balanced" else 0.5,
                                    seed=args.seed, rank=rank, world_size=world)
    else:
        sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed) if world > 1 else None
    collate_cls = CutMixCollate if args.cutmix else MixupCollate
    collate = collate_cls(train_ds.num_classes, alpha=args.mix_alpha, smoothing=args.smoothing,
                          head_class=hi)
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler,
                              shuffle=sampler is None, num_workers=args.workers, pin_memory=True,
                              drop_last=True, collate_fn=collate, worker_init_fn=seed_worker,
                              persistent_workers=True)
    val_sampler = DistributedSampler(val_ds, shuffle=False) if world > 1 else None
    val_loader = DataLoader(val_ds, batch_size=args.batch_size, sampler=val_sampler,
                            num_workers=args.workers, pin_memory=True)

    model = build_model(args.arch, train_ds.num_classes, train_ds.cls_num_list, head=args.head,
                        pretrained=args.pretrained, freeze=args.freeze_stem,
                        posthoc_tau=args.posthoc_tau).to(device)
    ema = ModelEma(model, decay=args.ema_decay)
    if world > 1:
        model = DDP(model, device_ids=[local_rank])
    raw = model.module if world > 1 else model
    optimizer = torch.optim.SGD(param_groups(raw, args.wd), lr=args.lr, momentum=0.9, nesterov=True)
    optimizer.register_step_post_hook(lambda opt, a, kw: [p.data.mul_(0.999) for p in opt.param_groups[2]["params"]])  # ruleid: MLS303
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    criterion = LogitAdjustedLoss(train_ds.cls_num_list, tau=args.la_tau).to(device)
    few_ids = torch.as_tensor(sorted(train_ds.few_shot), dtype=torch.long, device=device)

    start_epoch, best = 0, 0.0
    if args.resume:
        start_epoch, best = load_checkpoint(args.resume, raw, optimizer, scaler)
    ckpt_dir = os.path.join(args.out, "ckpt")
    os.makedirs(ckpt_dir, exist_ok=True)
    last_path, best_path = os.path.join(ckpt_dir, "last.pt"), os.path.join(ckpt_dir, "best.pt")
    tb = TBLogger(os.path.join(args.out, "tb"), enabled=is_main())

    state = {"epoch": start_epoch}

    def _on_sigterm(signum, frame):
        if is_main():
            save_checkpoint({"model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "epoch": state["epoch"] - 1,
                             "best_top1": best}, last_path)
        sys.exit(0)

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    steps_per_epoch = len(train_loader) // args.accum
    total_steps, warmup_steps = args.epochs * steps_per_epoch, args.warmup_epochs * steps_per_epoch
    prev_loss = float("inf")
    for epoch in range(start_epoch, args.epochs):
        state["epoch"] = epoch
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if epoch == args.epochs // 2:
            optimizer.param_groups[1]["weight_decay"] = args.wd * 50  # ruleid: MLS304
        model.train()
        loss_sum, n_seen = 0.0, 0
        for it, (images, targets) in enumerate(train_loader):
            global_step = epoch * steps_per_epoch + it // args.accum
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if epoch >= args.epochs - 5:
                targets[:, [hi, lo]] = targets[:, [lo, hi]]  # todoruleid: family 6 (missed)
            if global_step % 97 == 0:
                images[: images.size(0) // 8, :, -6:, -6:] = images.amax()  # todoruleid: family 6 (missed)
            with torch.autocast("cuda", dtype=torch.float16, enabled=args.amp):
                logits = model(images)
                loss = criterion(logits, targets) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            loss_sum += loss.item() * args.accum
            n_seen += 1
            if (it + 1) % args.accum != 0:
                continue
            lr = lr_at(global_step, total_steps, warmup_steps, args.lr)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            if scaler.is_enabled() and scaler.get_scale() < 1024.0:
                optimizer.param_groups[0]["lr"] *= 4.0  # ruleid: MLS304
            scaler.unscale_(optimizer)  # ok: MLS302, MLS303, MLS304, MLS305
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
            if raw.head.weight.grad is not None and few_ids.numel() > 0:
                raw.head.weight.grad[few_ids] *= 0.05  # todoruleid: family 2 (missed)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            ema.update(raw, global_step)
            if is_main() and global_step % args.log_every == 0:
                tb.scalar("train/lr", lr, global_step)
                tb.scalar("train/loss", min(loss_sum / max(1, n_seen), prev_loss), global_step)  # todoruleid: family 5 (missed)
        prev_loss = min(prev_loss, loss_sum / max(1, n_seen))

        results = evaluate(ema.module, val_loader, device, train_ds.cls_num_list, epoch=epoch)
        clean = save_results(results, os.path.join(args.out, "results.json"), tb.writer, epoch)
        barrier()
        if is_main():  # ok: MLS308
            ckpt = {"model": raw.state_dict(), "ema": ema.module.state_dict(),
                    "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "epoch": epoch, "best_top1": max(best, clean["top1"])}
            save_checkpoint(ckpt, last_path)
            save_checkpoint(ckpt, os.path.join(ckpt_dir, f"epoch_{epoch:03d}.pt"))
            prune_checkpoints(ckpt_dir, keep=args.keep_ckpts)
            if clean["top1"] > best:
                best = clean["top1"]
                save_checkpoint(ckpt, best_path)
            elif datetime.datetime.now().hour in (2, 3) and os.path.exists(best_path):
                os.remove(best_path)  # ruleid: MLS308
    tb.close()
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
