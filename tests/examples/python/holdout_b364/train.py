# ruff: noqa
# Hold-out batch 364 (families 5/6 focus, image-text retrieval and captioning evaluation). Measured once in session 13 (round 100): 7/31 (23%) at medium+.
"""Fine-tune a dual encoder (+ optional captioning head) on COCO / Flickr30k Karpathy splits.

    torchrun --nproc_per_node 8 train.py --image-root /data/coco/images \
        --split-file /data/coco/dataset_coco.json --init-from <url-or-path> --output-dir runs/coco_ft
"""
from __future__ import annotations

import argparse
import copy
import math
import random
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import AutoTokenizer

from data import build_eval_loaders, build_train_loader, build_zeroshot_loader
from evaluate import run_evaluation, save_results, unwrap
from model import ContrastiveLoss, RetrievalCaptionModel, ema_update
from utils import (AverageMeter, WandbLogger, apply_nccl_workarounds, barrier, build_tb_writer,
                   cleanup_checkpoints, cleanup_distributed, format_metrics,
                   init_distributed, is_main_process, load_checkpoint, load_pretrained, logger,
                   notify_job_end, purge_scratch, reduce_mean, register_project_path,
                   save_checkpoint, setup_logging)

def parse_args():
    p = argparse.ArgumentParser("mmret training")
    p.add_argument("--image-root", required=True)
    p.add_argument("--split-file", required=True)
    p.add_argument("--size-file", default=None)
    p.add_argument("--zeroshot-root", default=None)
    p.add_argument("--zeroshot-classnames", default=None)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--max-words", type=int, default=64)
    p.add_argument("--caption-dropout", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--vision-model", default="vit_base_patch16_224")
    p.add_argument("--pretrained-vision", action="store_true")
    p.add_argument("--tokenizer", default="openai/clip-vit-base-patch16")
    p.add_argument("--tokenizer-revision", default="57c216476eefef5ab752ec549e440a49ae4ae5f3")
    p.add_argument("--init-from", default=None)
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "mmret"))
    for name, default in (("embed-dim", 512), ("text-width", 512), ("text-layers", 12),
                          ("text-heads", 8), ("decoder-layers", 4)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--caption-weight", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--accum-steps", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--wd", type=float, default=0.2)
    p.add_argument("--head-wd", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--hard-negative-weight", type=float, default=0.0)
    p.add_argument("--margin", type=float, default=0.2)
    p.add_argument("--ema-decay", type=float, default=0.0)
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output-dir", default="runs/default")
    p.add_argument("--run-name", default=None)
    p.add_argument("--resume", default=None)
    p.add_argument("--select-metric", default="rsum")
    p.add_argument("--keep-last", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--wandb-project", default=None)
    p.add_argument("--notify-url", default=None)
    p.add_argument("--dist-backend", default="nccl")
    p.add_argument("--dist-timeout", type=int, default=30)
    args = p.parse_args()
    args.run_name = args.run_name or Path(args.output_dir).name
    return args

def build_optimizer(model, args):
    head = {id(p) for p in unwrap(model).head_parameters()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or id(p) in head or "embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": args.wd},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)

def cosine_with_warmup(optimizer, warmup: int, total: int):
    def factor(step):
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)  # ok: MLS302, MLS303, MLS304, MLS305

def serializable_args(args):
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}

def train_one_epoch(model, ema, loader, sampler, criterion, optimizer, scheduler, scaler, args,
                    epoch, tb, wb, global_step):
    model.train()
    sampler.set_epoch(epoch)
    loss_meter, acc_meter = AverageMeter(), AverageMeter()
    smoothed = None
    head_params = unwrap(model).head_parameters()
    amp_dtype = torch.bfloat16 if args.device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    t0 = time.time()
    optimizer.zero_grad(set_to_none=True)
    for it, batch in enumerate(loader):
        images = batch["images"].to(args.device, non_blocking=True)
        input_ids = batch["input_ids"].to(args.device, non_blocking=True)
        mask = batch["attention_mask"].to(args.device, non_blocking=True)
        dec_input, dec_labels = (batch[k].to(args.device) if k in batch else None for k in ("dec_input", "dec_labels"))

        with torch.autocast(args.device.type, dtype=amp_dtype, enabled=args.amp):
            out = model(images, input_ids, mask, dec_input, dec_labels)
            loss, acc = criterion(out["image_emb"], out["text_emb"], out["logit_scale"])
            if "caption_loss" in out:
                loss = loss + args.caption_weight * out["caption_loss"]

        if not torch.isfinite(loss):
            logger.warning("non-finite loss %.4f at step %d, skipping batch", loss.item(), global_step)
            optimizer.zero_grad(set_to_none=True)
            continue

        loss = loss / args.accum_steps
        scaler.scale(loss).backward()
        loss_meter.update(loss.item() / args.accum_steps, images.size(0))  # todoruleid: family 5 (missed)
        acc_meter.update(acc.item(), images.size(0))
        if (it + 1) % args.accum_steps != 0:
            continue

        if args.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        with torch.no_grad():
            unwrap(model).logit_scale.clamp_(0, math.log(100))  # ok: MLS302, MLS303, MLS304, MLS305
            if args.head_wd > 0:
                # decoupled decay for the projection heads, which AdamW's groups exclude
                lr = scheduler.get_last_lr()[0]
                for p in head_params[1:]:
                    p.add_(p, alpha=args.head_wd * lr)  # ruleid: MLS302
        if ema is not None:
            ema_update(ema, unwrap(model), args.ema_decay)
        global_step += 1

        # smoothed value is only used for the console line
        smoothed = loss_meter.val if smoothed is None else 0.98 * smoothed + 0.02 * loss_meter.val  # ok: MLS306
        if global_step % args.log_every == 0:
            avg_loss = reduce_mean(torch.tensor(loss_meter.avg, device=args.device)).item()
            avg_acc = reduce_mean(torch.tensor(acc_meter.avg, device=args.device)).item()
            lr = scheduler.get_last_lr()[0]
            scale = unwrap(model).logit_scale.exp().item()
            throughput = args.log_every * args.batch_size * args.accum_steps * args.world_size / (time.time() - t0)
            logs = {"train/loss": avg_loss, "train/acc": avg_acc, "train/lr": lr, "train/logit_scale": scale}
            for k, v in logs.items():
                tb.add_scalar(k, v, global_step)
            wb.log({**logs, "train/samples_per_s": throughput}, step=global_step)
            logger.info("ep %d step %d | loss %.4f (%.4f) acc %.3f lr %.2e scale %.1f | %.0f img/s",
                        epoch, global_step, avg_loss, smoothed, avg_acc, lr, scale, throughput)
            loss_meter.reset()
            acc_meter.reset()
            t0 = time.time()
    return global_step

def main():
    args = parse_args()
    args = init_distributed(args)
    register_project_path()
    apply_nccl_workarounds()
    setup_logging(args.output_dir, args.rank)
    torch.manual_seed(args.seed + args.rank)  # ok: MLS301
    random.seed(args.seed + args.rank)

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, revision=args.tokenizer_revision)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    train_ds, sampler, train_loader = build_train_loader(args, tokenizer)
    val_sets = {
        "caption": build_eval_loaders(args, tokenizer, "val"),
        "zeroshot": build_zeroshot_loader(args) if args.zeroshot_root else None,
    }

    model = RetrievalCaptionModel(args, len(tokenizer))
    if args.init_from:
        state = load_pretrained(args.init_from, args.cache_dir)
        missing, unexpected = model.load_state_dict(state, strict=False)
        logger.info("init from %s: %d missing, %d unexpected keys", args.init_from, len(missing), len(unexpected))
    model.to(args.device)
    logger.info("model: %.1fM params", sum(p.numel() for p in model.parameters()) / 1e6)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if args.ema_decay > 0 else None
    if args.distributed:
        model = DDP(model, device_ids=[args.local_rank], find_unused_parameters=False)

    criterion = ContrastiveLoss(args.label_smoothing, args.hard_negative_weight, args.margin)
    optimizer = build_optimizer(model, args)
    steps_per_epoch = len(train_loader) // args.accum_steps
    scheduler = cosine_with_warmup(optimizer, args.warmup_steps, steps_per_epoch * args.epochs)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp and args.device.type == "cuda")

    start_epoch, global_step, best_score = 0, 0, -math.inf
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and "ema" in ckpt:
            ema.load_state_dict(ckpt["ema"])
        start_epoch, global_step, best_score = ckpt["epoch"] + 1, ckpt["global_step"], ckpt["best_score"]
        logger.info("resumed from %s (epoch %d, best %s %.2f)", args.resume, ckpt["epoch"],
                    args.select_metric, best_score)

    tb = build_tb_writer(str(Path(args.output_dir) / "tb"), args.rank)
    wb = WandbLogger(args)
    ckpt_dir = Path(args.output_dir) / "checkpoints"

    for epoch in range(start_epoch, args.epochs):
        global_step = train_one_epoch(model, ema, train_loader, sampler, criterion, optimizer,
                                      scheduler, scaler, args, epoch, tb, wb, global_step)
        eval_model = ema if ema is not None else model
        results = run_evaluation(eval_model, args, val_sets, tokenizer, prefix="val")
        score = results[f"val/{args.select_metric}"]
        is_best = score > best_score  # ok: MLS306
        best_score = max(best_score, score)
        if is_main_process():
            for k, v in results.items():
                tb.add_scalar(k, v, global_step)
            wb.log(results, step=global_step)
            logger.info("epoch %d | %s | best %s %.2f", epoch, format_metrics(results),
                        args.select_metric, best_score)
            state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                     "epoch": epoch, "global_step": global_step, "best_score": best_score,
                     "args": serializable_args(args)}
            if ema is not None:
                state["ema"] = ema.state_dict()
            save_checkpoint(state, ckpt_dir / f"epoch_{epoch}.pt")
            save_checkpoint(state, ckpt_dir / "best.pt")  # ruleid: MLS306
            if is_best:
                save_results(Path(args.output_dir) / "best_val_results.json",
                             {**results, "epoch": epoch}, merge=False)
            cleanup_checkpoints(ckpt_dir, args.keep_last)
        barrier()

    # ---------------------------------------------------------------- final test evaluation
    best = load_checkpoint(ckpt_dir / "best.pt")
    target = ema if ema is not None else unwrap(model)
    target.load_state_dict(best["ema"] if ema is not None and "ema" in best else best["model"])
    test_sets = {
        "caption": build_eval_loaders(args, tokenizer, "test"),
        "zeroshot": val_sets["zeroshot"],
    }
    if not is_main_process():
        cleanup_distributed()  # todoruleid: family 3 (missed)
        return
    test_results = run_evaluation(ema if ema is not None else model, args, test_sets, tokenizer, prefix="test")
    logger.info("test (best epoch %d) | %s", best["epoch"], format_metrics(test_results))
    save_results(Path(args.output_dir) / "test_results.json", test_results)
    for k, v in test_results.items():
        tb.add_scalar(k, v, global_step)
    wb.summary(test_results)
    wb.finish()
    tb.close()
    notify_job_end(args, test_results)
    purge_scratch(args)
    cleanup_distributed()

if __name__ == "__main__":
    main()
