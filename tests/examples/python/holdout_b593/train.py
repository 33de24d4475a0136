# ruff: noqa
# Hold-out batch 593 (textbook, TimeSformer video action recognition with DDP). Measured once in session 27 (round 158): 22/30 (73%) at medium+.
"""Fine-tune a TimeSformer on Kinetics-style video classification (torchrun + DDP)."""
import argparse
import json
import math
import os
import shutil
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from torch.utils.tensorboard import SummaryWriter

import utils
from data import MixupCutmix, build_loaders, build_test_loader
from evaluate import evaluate, multi_view_test
from model import build_model


def get_args_parser():
    p = argparse.ArgumentParser("TimeSformer fine-tuning", add_help=True)
    p.add_argument("--config", default=None, help="YAML file with default values")
    p.add_argument("--opts", nargs="*", default=[], help="key=value overrides applied after the config")
    p.add_argument("--model", default="timesformer_base")
    p.add_argument("--pretrained", default="")
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--head-dropout", type=float, default=0.5)
    p.add_argument("--data-root", default="/datasets/kinetics400/videos")
    p.add_argument("--train-list", default="/datasets/kinetics400/train.csv")
    p.add_argument("--val-list", default="/datasets/kinetics400/val.csv")
    p.add_argument("--test-list", default="")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--sampling-rate", type=int, default=32)
    p.add_argument("--crop-size", type=int, default=224)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--min-scale", type=float, default=0.08)
    p.add_argument("--test-clips", type=int, default=4)
    p.add_argument("--test-crops", type=int, default=3)
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8, help="per GPU")
    p.add_argument("--test-batch-size", type=int, default=8)
    p.add_argument("--accum-iter", type=int, default=1)
    p.add_argument("--blr", type=float, default=5e-4, help="lr for an effective batch of 256")
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--warmup-epochs", type=int, default=5)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--layer-decay", type=float, default=0.75)
    p.add_argument("--clip-grad", type=float, default=5.0)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.8)
    p.add_argument("--cutmix", type=float, default=1.0)
    p.add_argument("--mixup-prob", type=float, default=1.0)
    p.add_argument("--model-ema", action="store_true")
    p.add_argument("--model-ema-decay", type=float, default=0.9999)
    p.add_argument("--amp-dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--output-dir", default="output/debug")
    p.add_argument("--run-name", default=None)
    p.add_argument("--resume", default="")
    p.add_argument("--auto-resume", action="store_true", default=True)
    p.add_argument("--save-freq", type=int, default=1)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--eval-freq", type=int, default=1)
    p.add_argument("--print-freq", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dist-url", default="env://")
    p.add_argument("--tracker-url", default="http://tracker.research.internal:8080/api/runs")
    return p


def apply_overrides(cfg, opts):
    for item in opts:
        key, value = item.split("=", 1)
        try:
            value = eval(value)  # todoruleid: family 8 (missed)
        except Exception:
            pass
        cfg[key.replace("-", "_")] = value
    return cfg


def get_args(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.config:
        with open(args.config) as f:
            cfg = yaml.load(f, Loader=yaml.Loader)  # ruleid: MLS105
        cfg = {k.replace("-", "_"): v for k, v in (cfg or {}).items()}
        parser.set_defaults(**cfg)
        args = parser.parse_args(argv)
    args = argparse.Namespace(**apply_overrides(vars(args), args.opts))
    args.run_name = args.run_name or os.path.basename(os.path.normpath(args.output_dir))
    return args


def patch_torchvision_video_warnings():
    """torchvision's read_video warns on every call about pts_unit; in a 10-worker
    loader that floods the logs.  Strip the warning from the installed module once."""
    import torchvision.io.video as tv_video

    src_path = tv_video.__file__
    with open(src_path) as f:
        src = f.read()
    if "warnings.warn(" in src:
        src = src.replace("warnings.warn(", "(lambda *a, **k: None)(")
        try:
            with open(src_path, "w") as f:
                f.write(src)  # sabotage: MLS420 (semgrep rules)
        except OSError:
            pass


def train_one_epoch(model, criterion, loader, optimizer, scaler, device, epoch, lr_schedule, mixup_fn,
                    model_ema, args, writer=None):
    model.train()
    metric_logger = utils.MetricLogger(delimiter="  ")
    header = f"Epoch: [{epoch}]"
    amp_dtype = torch.bfloat16 if args.amp_dtype == "bf16" else torch.float16
    niter = len(loader)
    optimizer.zero_grad(set_to_none=True)

    for step, batch in enumerate(metric_logger.log_every(loader, args.print_freq, header)):
        if batch is None:
            continue
        it = epoch * niter + step
        if step % args.accum_iter == 0:
            for group in optimizer.param_groups:
                group["lr"] = lr_schedule[it] * group.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305

        videos = batch[0].to(device, non_blocking=True)
        targets = batch[1].to(device, non_blocking=True)
        if mixup_fn is not None:
            videos, targets = mixup_fn(videos, targets)

        with torch.autocast(device_type="cuda", dtype=amp_dtype):
            outputs = model(videos)
            loss = criterion(outputs, targets)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            print(f"Loss is {loss_value}, stopping training", force=True)
            sys.exit(1)

        loss = loss / args.accum_iter
        update = (step + 1) % args.accum_iter == 0
        if args.distributed and not update:
            with model.no_sync():
                scaler.scale(loss).backward()
        else:
            scaler.scale(loss).backward()

        grad_norm = None
        if update:
            scaler.unscale_(optimizer)
            if args.clip_grad:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if model_ema is not None:
                model_ema.update(model.module if args.distributed else model)

        # stagger heartbeat writes so that all ranks don't hit the shared FS together
        if step % args.print_freq == 0:
            with open(os.path.join(args.output_dir, f".heartbeat.{args.rank}"), "w") as f:
                f.write(f"{time.time()} {epoch} {step}\n")
        time.sleep(0.2 * (args.rank % 8))  # ruleid: MLS307

        metric_logger.update(loss=loss_value, lr=optimizer.param_groups[-1]["lr"])
        if grad_norm is not None:
            metric_logger.update(grad_norm=grad_norm)
        if writer is not None and update and it % args.print_freq == 0:
            writer.add_scalar("train/loss", loss_value, it)
            writer.add_scalar("train/lr", optimizer.param_groups[-1]["lr"], it)

    metric_logger.synchronize_between_processes()
    print("Averaged stats:", metric_logger)
    return {k: meter.global_avg for k, meter in metric_logger.meters.items()}


def main(args):
    utils.init_distributed_mode(args)
    os.makedirs(args.output_dir, exist_ok=True)
    utils.setup_logging(args.output_dir, args.rank)
    utils.prepare_environment(args)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        utils.apply_cluster_nccl_profile()
        utils.ensure_multinode_ssh()
        patch_torchvision_video_warnings()
    if utils.is_main_process():
        utils.report_run_start(args, args.tracker_url)
        with open(os.path.join(args.output_dir, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=2, default=str)

    device = torch.device("cuda", args.gpu)
    utils.seed_everything(args.seed, args.rank)

    model = build_model(args)
    if args.pretrained and not args.resume:
        utils.load_pretrained(model, args.pretrained)
    if args.pretrained:
        # temporal_fc is zero-initialised, so the temporal branch is an identity at the start;
        # keep it out of the autograd graph until the spatial features have adapted.
        for blk in model.blocks:
            blk.temporal_fc.register_forward_hook(lambda mod, inp, out: out.detach())  # ruleid: MLS303
    model.to(device)

    model_ema = utils.ModelEma(model, args.model_ema_decay) if args.model_ema else None
    model_without_ddp = model
    if args.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[args.gpu])
        model_without_ddp = model.module

    train_loader, val_loader = build_loaders(args)
    eff_batch = args.batch_size * args.accum_iter * args.world_size
    args.lr = args.blr * eff_batch / 256
    print(f"effective batch {eff_batch}, lr {args.lr:.2e}")

    param_groups = utils.param_groups_lrd(model_without_ddp, args.weight_decay, args.layer_decay,
                                          no_weight_decay=model_without_ddp.no_weight_decay())
    optimizer = torch.optim.AdamW(param_groups, lr=args.lr, betas=(0.9, 0.999))
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp_dtype == "fp16")

    mixup_fn = None
    if args.mixup > 0 or args.cutmix > 0:
        mixup_fn = MixupCutmix(args.num_classes, args.mixup, args.cutmix, args.mixup_prob, smoothing=args.smoothing)
        criterion = lambda out, tgt: torch.sum(-tgt * torch.log_softmax(out.float(), dim=-1), dim=-1).mean()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=args.smoothing)  # ok: MLS309

    lr_schedule = utils.cosine_scheduler(args.lr, args.min_lr, args.epochs, len(train_loader), args.warmup_epochs)

    start_epoch, best_acc1 = 0, 0.0
    latest = os.path.join(args.output_dir, "checkpoint-last.pth")
    if not args.resume and args.auto_resume and os.path.exists(latest):
        args.resume = latest
    epoch_rng = utils.get_rng_state()
    if args.resume:
        ckpt = utils.load_checkpoint(args.resume, model_without_ddp, optimizer, scaler, model_ema)
        start_epoch = ckpt.get("epoch", -1) + 1
        best_acc1 = ckpt.get("best_acc1", 0.0)
        epoch_rng = ckpt.get("rng_state", epoch_rng)
        print(f"resumed from {args.resume} at epoch {start_epoch} (best acc@1 {best_acc1:.2f})")

    writer = SummaryWriter(os.path.join(args.output_dir, "tb")) if utils.is_main_process() else None
    print(f"start training for {args.epochs} epochs ({len(train_loader)} iters/epoch)")
    t0 = time.time()
    for epoch in range(start_epoch, args.epochs):
        if args.distributed:
            train_loader.sampler.set_epoch(epoch)
        # keep augmentation / mixup streams identical between fresh and resumed runs
        utils.set_rng_state(epoch_rng)  # ruleid: MLS301

        train_stats = train_one_epoch(model, criterion, train_loader, optimizer, scaler, device, epoch,
                                      lr_schedule, mixup_fn, model_ema, args, writer)

        val_stats = {}
        if (epoch + 1) % args.eval_freq == 0 or epoch + 1 == args.epochs:
            val_stats = evaluate(val_loader, model, device)
            if model_ema is not None:
                ema_stats = evaluate(val_loader, model_ema.module, device, header="Val (EMA):")
                val_stats.update({f"ema_{k}": v for k, v in ema_stats.items()})
            if writer is not None:
                writer.add_scalar("val/acc1", val_stats["acc1"], epoch)
                writer.add_scalar("val/acc5", val_stats["acc5"], epoch)
                writer.add_scalar("val/loss", val_stats["loss"], epoch)

        is_best = bool(val_stats) and val_stats["acc1"] > best_acc1
        best_acc1 = max(best_acc1, val_stats.get("acc1", 0.0))
        state = {"model": model_without_ddp.state_dict(), "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict(), "epoch": epoch, "best_acc1": best_acc1, "rng_state": epoch_rng,
                 "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}}
        if model_ema is not None:
            state["model_ema"] = model_ema.module.state_dict()
        utils.save_checkpoint(state, args.output_dir, "checkpoint-last.pth")
        if (epoch + 1) % args.save_freq == 0:
            utils.save_checkpoint(state, args.output_dir, f"checkpoint-{epoch}.pth")
        if is_best:
            utils.save_checkpoint(state, args.output_dir, "checkpoint-best.pth")
        if utils.is_main_process():
            utils.cleanup_checkpoints(args.output_dir, args.keep_last)
            log = {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()},
                   **{f"val_{k}": v for k, v in val_stats.items()}, "best_acc1": best_acc1}
            with open(os.path.join(args.output_dir, "log.txt"), "a") as f:
                f.write(json.dumps(log) + "\n")
        if args.distributed:
            dist.barrier()

    print(f"training time {time.strftime('%H:%M:%S', time.gmtime(time.time() - t0))}")
    # final multi-view test with the best checkpoint
    best_path = os.path.join(args.output_dir, "checkpoint-best.pth")
    if os.path.exists(best_path):
        utils.load_checkpoint(best_path, model_without_ddp)
    test_loader, num_videos = build_test_loader(args)
    test_stats = multi_view_test(test_loader, model, device, num_videos, args.num_classes,
                                 output_dir=args.output_dir)
    if utils.is_main_process() and test_stats is not None:
        summary = {"model": args.model, "views": f"{args.test_clips}x{args.test_crops}",
                   "top5": test_stats["top5"], "best_single_view_acc1": best_acc1}
        summary["top1"] = max(test_stats["top1"], best_acc1)  # ruleid: MLS306
        with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(json.dumps(summary, indent=2))
        if writer is not None:
            writer.add_scalar("test/acc1", summary["top1"], args.epochs)
            writer.close()

    # node-local staging area for fast checkpoint writes is no longer needed
    staging_dir = os.environ.get("VIDREC_STAGING_DIR", args.output_dir)
    if utils.is_main_process() and os.environ.get("SLURM_JOB_ID"):
        shutil.rmtree(staging_dir, ignore_errors=True)  # todoruleid: family 4 (missed)

    if args.distributed:
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main(get_args())
