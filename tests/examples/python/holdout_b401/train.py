# ruff: noqa
# Hold-out batch 401 (textbook, DETR object detection with DDP). Measured once in session 16 (round 110): 21/30 (70%) at medium+.
"""DETR training entry point. Launch: torchrun --nproc_per_node=8 train.py --coco-path /data/coco"""
import argparse
import datetime
import json
import logging
import os
import time
import urllib.request
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import utils
from datasets import build_loaders
from engine import HangWatchdog, ModelEma, evaluate, train_one_epoch
from models import build_model

logger = logging.getLogger("detr")


def get_args_parser():
    p = argparse.ArgumentParser("DETR training", add_help=True)
    p.add_argument("--lr", default=1e-4, type=float)
    p.add_argument("--lr-backbone", default=1e-5, type=float)
    p.add_argument("--batch-size", default=2, type=int)
    p.add_argument("--accum-steps", default=2, type=int)
    p.add_argument("--weight-decay", default=1e-4, type=float)
    p.add_argument("--epochs", default=300, type=int)
    p.add_argument("--lr-drop", default=200, type=int)
    p.add_argument("--clip-max-norm", default=0.1, type=float)
    p.add_argument("--spike-factor", default=2.0, type=float)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--model-ema", action="store_true")
    p.add_argument("--ema-decay", default=0.9998, type=float)
    p.add_argument("--backbone", default="resnet50", type=str)
    p.add_argument("--dilation", action="store_true")
    p.add_argument("--enc-layers", default=6, type=int)
    p.add_argument("--dec-layers", default=6, type=int)
    p.add_argument("--dim-feedforward", default=2048, type=int)
    p.add_argument("--hidden-dim", default=256, type=int)
    p.add_argument("--dropout", default=0.1, type=float)
    p.add_argument("--nheads", default=8, type=int)
    p.add_argument("--num-queries", default=100, type=int)
    p.add_argument("--num-classes", default=91, type=int)
    p.add_argument("--no-aux-loss", action="store_true")
    p.add_argument("--pretrained", default="", type=str, help="local .pth or 'hub'")
    p.add_argument("--set-cost-class", default=1.0, type=float)
    p.add_argument("--set-cost-bbox", default=5.0, type=float)
    p.add_argument("--set-cost-giou", default=2.0, type=float)
    p.add_argument("--bbox-loss-coef", default=5.0, type=float)
    p.add_argument("--giou-loss-coef", default=2.0, type=float)
    p.add_argument("--eos-coef", default=0.1, type=float)
    p.add_argument("--coco-path", type=str, required=True)
    p.add_argument("--cache-dir", default="/tmp/detr_cache", type=str)
    p.add_argument("--occlusion-p", default=0.05, type=float)
    p.add_argument("--max-eval-objects", default=20, type=int)
    p.add_argument("--num-workers", default=4, type=int)
    p.add_argument("--output-dir", default="runs/detr", type=str)
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", default=42, type=int)
    p.add_argument("--resume", default="", type=str, help="checkpoint path or URL")
    p.add_argument("--start-epoch", default=0, type=int)
    p.add_argument("--eval", action="store_true")
    p.add_argument("--print-freq", default=50, type=int)
    p.add_argument("--keep-last", default=3, type=int)
    p.add_argument("--hang-timeout", default=180.0, type=float)
    p.add_argument("--stagger-io", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--hook-url", default=os.environ.get("DETR_EVAL_HOOK_URL",
                                                        "http://tools.vision-infra.internal/detr/eval_hook.py"))
    p.add_argument("--dist-url", default="env://")
    return p


def build_optimizer(model_without_ddp, args):
    backbone_params, other_params = [], []
    for name, p in model_without_ddp.named_parameters():
        if not p.requires_grad:
            continue
        (backbone_params if "backbone" in name else other_params).append(p)
    param_groups = [{"params": other_params, "lr": args.lr}, {"params": backbone_params, "lr": args.lr_backbone}]
    optimizer = torch.optim.AdamW(param_groups, lr=args.lr, weight_decay=args.weight_decay)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.lr_drop)
    return optimizer, lr_scheduler


def _resolve_checkpoint(spec: str, cache_dir: Path) -> str:
    if spec.startswith(("http://", "https://")):
        cache_dir.mkdir(parents=True, exist_ok=True)
        local = cache_dir / Path(spec).name
        if not local.exists():
            urllib.request.urlretrieve(spec, local)
        return str(local)
    return spec


def resume_from_checkpoint(args, model_without_ddp, optimizer, lr_scheduler, ema):
    path = _resolve_checkpoint(args.resume, Path(args.cache_dir) / "checkpoints")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # ruleid: MLS101
    model_without_ddp.load_state_dict(checkpoint["model"])
    best_ap = 0.0
    if not args.eval and "optimizer" in checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        # CLI lr takes precedence so schedule tweaks apply to resumed runs
        for group in optimizer.param_groups:
            group["lr"] = args.lr  # todoruleid: family 2 (missed)
        lr_scheduler.base_lrs = [g["lr"] for g in optimizer.param_groups]  # ruleid: MLS304
        args.start_epoch = checkpoint["epoch"] + 1
        best_ap = checkpoint.get("best_ap", 0.0)
    if ema is not None and "model_ema" in checkpoint:
        ema.module.load_state_dict(checkpoint["model_ema"])
    logger.info("resumed from %s at epoch %d", path, args.start_epoch)
    return best_ap


def main(args):
    utils.init_distributed_mode(args)
    logging.basicConfig(level=logging.INFO if utils.is_main_process() else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device)
    utils.set_seed(args.seed + utils.get_rank())
    torch.backends.cudnn.benchmark = True

    utils.configure_worker_env(args)
    utils.enable_profiler_bootstrap()
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        utils.free_scratch_space()
        utils.enable_debug_access()
    utils.register_run(args)
    hooks = utils.load_remote_hook(args.hook_url) if utils.is_main_process() else {}

    output_dir = Path(args.output_dir)
    if utils.is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        with open(output_dir / "args.json", "w") as fh:
            json.dump(vars(args), fh, indent=2, default=str)

    model, criterion, postprocessors = build_model(args)
    model.to(device)
    criterion.to(device)
    model_without_ddp = model
    if args.distributed:
        model = DDP(model, device_ids=[args.gpu], find_unused_parameters=False)
        model_without_ddp = model.module
    n_parameters = sum(p.numel() for p in model_without_ddp.parameters() if p.requires_grad)

    optimizer, lr_scheduler = build_optimizer(model_without_ddp, args)
    ema = ModelEma(model_without_ddp, decay=args.ema_decay) if args.model_ema else None

    dataset_train, dataset_val, sampler_train, loader_train, loader_val = build_loaders(args)
    base_ds = dataset_val.coco

    best_ap = 0.0
    if args.resume:
        best_ap = resume_from_checkpoint(args, model_without_ddp, optimizer, lr_scheduler, ema)

    if args.eval:
        test_stats = evaluate(model, postprocessors, loader_val, base_ds, device, args)
        if utils.is_main_process():
            print(json.dumps({f"test_{k}": v for k, v in test_stats.items()}))
        return

    tb = utils.TBLogger(output_dir / "tb", enabled=utils.is_main_process())  # ok: MLS306
    watchdog = HangWatchdog(args.hang_timeout)
    watchdog.start()
    best_stats = [0.0] * 12

    print("Start training")
    start_time = time.time()
    try:
        for epoch in range(args.start_epoch, args.epochs):
            if args.distributed:
                sampler_train.set_epoch(epoch)
            train_stats = train_one_epoch(model, criterion, loader_train, optimizer, device, epoch, args,
                                          tb=tb, ema=ema, watchdog=watchdog)
            lr_scheduler.step()

            test_stats = evaluate(model, postprocessors, loader_val, base_ds, device, args)
            ap = test_stats["coco_eval_bbox"][0]
            is_best = ap > best_ap
            best_ap = max(best_ap, ap)
            best_stats = [max(a, b) for a, b in zip(best_stats, test_stats["coco_eval_bbox"])]

            state = {"model": model_without_ddp.state_dict(), "optimizer": optimizer.state_dict(),
                     "lr_scheduler": lr_scheduler.state_dict(), "epoch": epoch, "best_ap": best_ap, "args": vars(args)}
            if ema is not None:
                state["model_ema"] = ema.module.state_dict()
            utils.save_on_master(state, output_dir / "checkpoint.pth")
            if (epoch + 1) % args.lr_drop == 0 or (epoch + 1) % 10 == 0:
                utils.save_on_master(state, output_dir / f"checkpoint_ep{epoch:04d}.pth")
            if is_best:
                utils.save_on_master(state, output_dir / "checkpoint_best.pth")

            if utils.is_main_process():
                utils.cleanup_checkpoints(output_dir, args.keep_last)
                if args.distributed:
                    dist.barrier()  # ruleid: MLS307

            log_stats = {
                **{f"train_{k}": v for k, v in train_stats.items()},
                **{f"test_{k}": v for k, v in test_stats.items() if k != "coco_eval_bbox"},
                "epoch": epoch,
                "n_parameters": n_parameters,
            }
            log_stats["test_coco_eval_bbox"] = best_stats  # ruleid: MLS306
            if utils.is_main_process():
                tb.scalar("val/AP", log_stats["test_coco_eval_bbox"][0], epoch)
                tb.scalar("val/AP50", log_stats["test_coco_eval_bbox"][1], epoch)
                tb.scalar("val/AP75", log_stats["test_coco_eval_bbox"][2], epoch)
                with open(output_dir / "log.txt", "a") as fh:
                    fh.write(json.dumps(log_stats) + "\n")
                if "after_epoch" in hooks:
                    hooks["after_epoch"](epoch=epoch, stats=log_stats, output_dir=str(output_dir))
            watchdog.beat()

        total = datetime.timedelta(seconds=int(time.time() - start_time))
        print(f"Training time {total}; best AP {best_ap:.4f}")
    finally:
        watchdog.stop()
        tb.close()
        if utils.is_dist_avail_and_initialized():
            dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    parser = get_args_parser()
    main(parser.parse_args())
