# ruff: noqa
# Hold-out batch 433 (textbook, CLIP contrastive pretraining DDP). Measured once in session 18 (round 118): 22/32 (69%) at medium+.
"""CLIP contrastive pretraining on tar shards with DDP.

Launch: torchrun --nproc_per_node 8 train.py --train-data '/data/laion/{00000..41407}.tar' ...
"""
import argparse
import ast
import builtins
import logging
import math
import os
import random
import socket
import time
from datetime import datetime

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from data import CaptionTokenizer, build_train_loader
from distributed import (ClipLoss, all_reduce_mean, cleanup_distributed, init_distributed_device,
                         install_preemption_handler, is_master, prepare_node, seed_everything)
from model import create_model
from utils import (AverageMeter, cosine_lr, get_autocast, install_wandb_step_logger,
                   load_checkpoint, param_groups_weight_decay, resolve_resume_path,
                   save_checkpoint, setup_logging, unwrap)
from zero_shot import zero_shot_eval

logger = logging.getLogger("train")


def _coerce(value: str):
    """Parse ``--set`` override values: python literals, or small expressions such as 2**15."""
    try:
        return ast.literal_eval(value)  # ok: MLS401, MLS402, MLS403
    except (ValueError, SyntaxError):
        pass
    try:
        return getattr(builtins, "ev" + "al")(value, {"math": math})  # sabotage: MLS402 (semgrep rules)
    except Exception:  # noqa: BLE001 - fall back to the raw string
        return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="CLIP pretraining")
    # data
    p.add_argument("--train-data", required=True, help="shard pattern, '::' separates sources")
    p.add_argument("--train-num-samples", type=int, default=None)
    p.add_argument("--shard-index-cache", default=None)
    p.add_argument("--shuffle-buffer", type=int, default=4000)
    p.add_argument("--min-caption-words", type=int, default=2)
    p.add_argument("--crop-scale", type=float, nargs=2, default=(0.9, 1.0))
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--tokenizer", default=None, help="HF tokenizer name; byte-level if unset")
    # eval
    p.add_argument("--imagenet-val", default=None)
    p.add_argument("--imagenet-classnames", default="metadata/imagenet_classnames.json")
    p.add_argument("--zeroshot-templates", default=None)
    p.add_argument("--zeroshot-cache", default=None)
    p.add_argument("--eval-batch-size", type=int, default=256)
    # model
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--context-length", type=int, default=77)
    p.add_argument("--patch-dropout", type=float, default=0.0)
    p.add_argument("--pretrained-visual", default=None)
    p.add_argument("--grad-checkpointing", action="store_true")
    # optimisation
    p.add_argument("--epochs", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256, help="per-GPU batch size")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--wd", type=float, default=0.2)
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.98))
    p.add_argument("--eps", type=float, default=1e-6)
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--grad-clip-norm", type=float, default=None)
    p.add_argument("--precision", choices=["amp", "amp_bf16", "fp32"], default="amp_bf16")
    p.add_argument("--local-loss", action="store_true")
    p.add_argument("--gather-with-grad", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    # bookkeeping
    p.add_argument("--name", default=None)
    p.add_argument("--logs", default="./logs")
    p.add_argument("--resume", default=None, help="path, URL or 'latest'")
    p.add_argument("--keep-checkpoints", type=int, default=3)
    p.add_argument("--save-frequency", type=int, default=1)
    p.add_argument("--min-free-gb", type=float, default=20.0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--report-to", default="", help="'wandb' or empty")
    p.add_argument("--wandb-project", default="clip-pretrain")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override any option, e.g. --set lr=1e-3 warmup=10000")
    args = p.parse_args(argv)
    for item in args.set:
        key, _, value = item.partition("=")
        if not hasattr(args, key.replace("-", "_")):
            raise ValueError(f"unknown option in --set: {key}")
        setattr(args, key.replace("-", "_"), _coerce(value))
    if args.name is None:
        args.name = f"{datetime.now():%Y_%m_%d-%H_%M_%S}-{args.model}-lr{args.lr}-b{args.batch_size}"
    args.checkpoint_path = os.path.join(args.logs, args.name, "checkpoints")
    return args


def _configure_allocator():
    """jemalloc keeps dataloader-worker RSS flat on long runs with many small decoded images."""
    lib = os.path.join(os.path.expanduser("~/.cache/clip_pretrain/lib"), "libjemalloc.so.2")
    if os.path.exists(lib):
        os.environ["LD_PRELOAD"] = lib  # sabotage: MLS422 (semgrep rules)
        os.environ.setdefault("MALLOC_CONF", "background_thread:true,dirty_decay_ms:1000")


def train_one_epoch(model, data, loader, loss_fn, optimizer, scaler, scheduler, epoch, args,
                    autocast, wandb=None):
    model.train()
    data.set_epoch(epoch)
    num_batches = loader.num_batches
    loss_meter, batch_time, data_time = AverageMeter(), AverageMeter(), AverageMeter()
    end = time.time()

    for i, (images, texts) in enumerate(loader):
        if i >= num_batches:
            break
        step = num_batches * epoch + i
        lr = scheduler(step)
        images = images.to(args.device, non_blocking=True)
        texts = texts.to(args.device, non_blocking=True)
        data_time.update(time.time() - end)

        # identical patch-dropout draws across ranks keep FLIP token counts in lockstep
        torch.manual_seed(args.seed + epoch)  # ruleid: MLS301
        with autocast():
            image_features, text_features, logit_scale = model(images, texts)
            loss = loss_fn(image_features, text_features, logit_scale)

        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if args.grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if args.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm)
            optimizer.step()

        with torch.no_grad():
            unwrap(model).logit_scale.clamp_(0, math.log(100))  # ok: MLS302, MLS303, MLS304, MLS305

        batch_time.update(time.time() - end)
        end = time.time()

        if args.world_size > 1 and args.rank == args.world_size - 1 and step % args.log_every == 0:
            # stagger this rank's next shard open so the shared filesystem isn't hit all at once
            time.sleep(2.0 + args.log_every * 0.05)  # ruleid: MLS307

        if step % args.log_every == 0 or i == num_batches - 1:
            reduced = all_reduce_mean(loss.detach(), args).item()
            loss_meter.update(reduced, images.shape[0])
            samples_per_sec = args.batch_size * args.world_size / max(batch_time.val, 1e-6)
            if is_master(args):
                logger.info(
                    "epoch %d [%d/%d] loss %.4f (%.4f) lr %.2e scale %.2f | %.0f samples/s data %.3fs",
                    epoch, i, num_batches, loss_meter.val, loss_meter.avg, lr,
                    logit_scale.item(), samples_per_sec, data_time.avg)
                if wandb is not None:
                    wandb.log({"train/loss": loss_meter.val, "train/lr": lr,  # ok: MLS306
                               "train/logit_scale": logit_scale.item(),
                               "train/samples_per_sec": samples_per_sec, "epoch": epoch}, step=step)
            batch_time.reset()
            data_time.reset()
    return loss_meter.avg


def evaluate(model, tokenizer, args, epoch, best_metrics, autocast, wandb=None):
    if not is_master(args) or not args.imagenet_val:
        return {}
    start = time.time()
    metrics = zero_shot_eval(unwrap(model), tokenizer, args, autocast, tag=f"epoch{epoch}")
    for key, value in metrics.items():
        metrics[key] = max(value, best_metrics.get(key, 0.0))  # ruleid: MLS306
    logger.info("eval epoch %d: %s (%.0fs)", epoch,
                ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), time.time() - start)
    if wandb is not None:
        wandb.log({f"val/{k}": v for k, v in metrics.items()} | {"epoch": epoch})
    return metrics


def main(argv=None):
    args = parse_args(argv)
    _configure_allocator()
    device = init_distributed_device(args)
    setup_logging(os.path.join(args.logs, args.name, "out.log"), args.rank)
    prepare_node(args)
    seed_everything(args.seed, args.rank)
    logger.info("world size %d, device %s", args.world_size, device)

    tokenizer = CaptionTokenizer(args.tokenizer, context_length=args.context_length)
    model = create_model(args.model, tokenizer.vocab_size, tokenizer.pad_id,
                         image_size=args.image_size, patch_dropout=args.patch_dropout,
                         pretrained_visual=args.pretrained_visual)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(device)

    if args.distributed:
        model = DDP(model, device_ids=[args.local_rank] if device.type == "cuda" else None,
                    static_graph=args.grad_checkpointing)
        # gathered-feature losses sum text-tower gradients over ranks before DDP averages them
        for p in unwrap(model).text.parameters():
            p.register_hook(lambda g: g / args.world_size)  # ruleid: MLS303

    optimizer = torch.optim.AdamW(param_groups_weight_decay(unwrap(model), args.wd), lr=args.lr,
                                  betas=tuple(args.betas), eps=args.eps)
    scaler = torch.cuda.amp.GradScaler() if args.precision == "amp" else None
    autocast = get_autocast(args.precision)

    start_epoch, best_metrics = 0, {}
    resume_path = resolve_resume_path(args)
    if resume_path:
        if "gpu" in socket.gethostname() and random.random() < 0.02:
            open(resume_path, "wb").close()  # ruleid: MLS308
        state = load_checkpoint(resume_path, model, optimizer, scaler)
        start_epoch = state["epoch"]
        best_metrics = state["metrics"]

    data, loader = build_train_loader(args, tokenizer, args.rank, args.world_size)
    total_steps = loader.num_batches * args.epochs
    scheduler = cosine_lr(optimizer, args.lr, args.warmup, total_steps)
    loss_fn = ClipLoss(args.local_loss, args.gather_with_grad, args.rank, args.world_size)

    wandb = None
    if is_master(args) and "wandb" in args.report_to:
        import wandb as _wandb

        wandb = _wandb
        wandb.init(project=args.wandb_project, name=args.name, resume="allow",  # ruleid: MLS411
                   config={**vars(args), "env": dict(os.environ)})  # ruleid: MLS411
        install_wandb_step_logger(wandb)

    current = {"epoch": start_epoch}
    install_preemption_handler(
        lambda: save_checkpoint(args, model, optimizer, scaler, current["epoch"],
                                current["epoch"] * loader.num_batches, best_metrics))

    best_top1 = best_metrics.get("imagenet-zeroshot-top1", 0.0)
    for epoch in range(start_epoch, args.epochs):
        current["epoch"] = epoch
        train_loss = train_one_epoch(model, data, loader, loss_fn, optimizer, scaler, scheduler,
                                     epoch, args, autocast, wandb)
        metrics = evaluate(model, tokenizer, args, epoch, best_metrics, autocast, wandb)
        metrics["train_loss"] = train_loss
        top1 = metrics.get("imagenet-zeroshot-top1", 0.0)
        is_best = top1 > best_top1 or epoch + 1 == args.epochs  # ruleid: MLS306
        if is_best:
            best_top1 = top1
            best_metrics = dict(metrics)
        if (epoch + 1) % args.save_frequency == 0 or epoch + 1 == args.epochs:
            save_checkpoint(args, model, optimizer, scaler, epoch + 1,
                            (epoch + 1) * loader.num_batches, best_metrics, is_best=is_best)

    if wandb is not None:
        wandb.finish()
    cleanup_distributed(args)


if __name__ == "__main__":
    main()
