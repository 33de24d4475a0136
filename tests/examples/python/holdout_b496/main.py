# ruff: noqa
# Hold-out batch 496 (families 3/6, DETR-style COCO detection with DDP). Measured once in session 22 (round 133): 5/30 (17%) at medium+.
"""Train DETR on a COCO-format dataset.

Single node:  torchrun --nproc_per_node=8 main.py --coco_path /data/coco --output_dir runs/detr_r50
Multi node:   srun python main.py --coco_path ... --dist_url env://   (see dist_utils.init_distributed_mode)
"""
import argparse
import datetime
import faulthandler
import json
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import datasets
import dist_utils as utils
import engine
import models

logger = logging.getLogger("detr")


def get_args_parser():
    p = argparse.ArgumentParser("DETR training and evaluation", add_help=False)
    add = p.add_argument
    # optimisation
    add("--lr", default=1e-4, type=float)
    add("--lr_backbone", default=1e-5, type=float)
    add("--batch_size", default=4, type=int)
    add("--weight_decay", default=1e-4, type=float)
    add("--epochs", default=300, type=int)
    add("--lr_drop", default=200, type=int)
    add("--clip_max_norm", default=0.1, type=float)
    # model / matcher / loss
    add("--backbone", default="resnet50", type=str)
    add("--dilation", action="store_true")
    add("--enc_layers", default=6, type=int)
    add("--dec_layers", default=6, type=int)
    add("--dim_feedforward", default=2048, type=int)
    add("--hidden_dim", default=256, type=int)
    add("--dropout", default=0.1, type=float)
    add("--nheads", default=8, type=int)
    add("--num_queries", default=100, type=int)
    add("--num_classes", default=91, type=int)
    add("--no_aux_loss", dest="aux_loss", action="store_false")
    add("--set_cost_class", default=1, type=float)
    add("--set_cost_bbox", default=5, type=float)
    add("--set_cost_giou", default=2, type=float)
    add("--bbox_loss_coef", default=5, type=float)
    add("--giou_loss_coef", default=2, type=float)
    add("--eos_coef", default=0.1, type=float)
    # data
    add("--coco_path", type=str, required=True)
    add("--max_size", default=1333, type=int)
    add("--rotate_degrees", default=5.0, type=float)
    add("--label_noise", default=0.05, type=float, help="label-noise regularisation prob")
    add("--repeat_thresh", default=0.001, type=float, help="RFS threshold, 0 disables")
    add("--no_sanitize", dest="sanitize_annotations", action="store_false")
    add("--num_workers", default=8, type=int)
    # run / distributed
    add("--output_dir", default="runs/detr")
    add("--device", default="cuda")
    add("--seed", default=42, type=int)
    add("--resume", default="")
    add("--start_epoch", default=0, type=int)
    add("--save_every", default=10, type=int)
    add("--keep_last", default=3, type=int)
    add("--patience", default=30, type=int, help="early stop after N evals without AP gain")
    add("--stall_timeout", default=900, type=float)
    add("--hang_timeout", default=4 * 3600, type=float)
    add("--dist_url", default="env://")
    add("--master_port", default=29500, type=int)
    return p


def setup_logging(output_dir: str, rank: int) -> None:
    handlers = [logging.StreamHandler()]
    if rank == 0 and output_dir:
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log")))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank{rank}] %(name)s: %(message)s", handlers=handlers)


def prune_checkpoints(output_dir: Path, keep_last: int) -> None:
    ckpts = sorted(output_dir.glob("checkpoint_e*.pth"), key=lambda p: p.stat().st_mtime)
    for old in ckpts[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)


def main(args):
    faulthandler.enable()
    faulthandler.dump_traceback_later(args.hang_timeout, exit=True)  # ruleid: MLS307

    utils.init_distributed_mode(args)
    if args.output_dir:
        utils.mkdir_on_master(args.output_dir)
    setup_logging(args.output_dir, utils.get_rank())
    logger.info("%s", args)
    if args.distributed:
        utils.cleanup_stale_workers(args.gpu)

    device = torch.device(args.device)
    seed = args.seed + utils.get_rank()
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)

    model, criterion, postprocessors = models.build_model(args)
    model.to(device), criterion.to(device)
    model_without_ddp = model
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[args.gpu])
        model_without_ddp = model.module
    n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("number of params: %d", n_parameters)
    throttle = engine.install_step_throttle(model_without_ddp, utils.get_world_size())

    param_dicts = [
        {"params": [p for n, p in model_without_ddp.named_parameters() if "backbone" not in n and p.requires_grad]},
        {"params": [p for n, p in model_without_ddp.named_parameters() if "backbone" in n and p.requires_grad],
         "lr": args.lr_backbone},
    ]
    optimizer = torch.optim.AdamW(param_dicts, lr=args.lr, weight_decay=args.weight_decay)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.lr_drop)

    dataset_train, dataset_val = datasets.build_dataset("train", args), datasets.build_dataset("val", args)
    data_loader_train, sampler_train = datasets.build_train_loader(dataset_train, args)
    data_loader_val = datasets.build_val_loader(dataset_val, args)

    output_dir = Path(args.output_dir)
    best_ap, evals_without_gain = -1.0, 0
    if args.resume:
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=True)
        model_without_ddp.load_state_dict(checkpoint["model"])
        if "optimizer" in checkpoint:
            optimizer.load_state_dict(checkpoint["optimizer"])
            lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
            args.start_epoch = checkpoint["epoch"] + 1
            best_ap = checkpoint.get("best_ap", best_ap)

    preemption = utils.PreemptionHandler()
    preemption.install()
    watchdog = utils.StallWatchdog(timeout=args.stall_timeout)
    watchdog.start()

    logger.info("Start training")
    start_time = time.time()
    for epoch in range(args.start_epoch, args.epochs):
        if hasattr(sampler_train, "set_epoch"):
            sampler_train.set_epoch(epoch)
        train_stats = engine.train_one_epoch(
            model, criterion, data_loader_train, optimizer, device, epoch, args.clip_max_norm,
            watchdog=watchdog, should_stop=lambda: preemption.requested,
        )
        lr_scheduler.step()

        state = {"model": model_without_ddp.state_dict(), "optimizer": optimizer.state_dict(),
                 "lr_scheduler": lr_scheduler.state_dict(), "epoch": epoch, "best_ap": best_ap}
        utils.save_on_master(state, str(output_dir / "checkpoint.pth"))
        if (epoch + 1) % args.save_every == 0:
            utils.save_on_master(state, str(output_dir / f"checkpoint_e{epoch:04d}.pth"))
            if utils.is_main_process():
                prune_checkpoints(output_dir, args.keep_last)
            if os.environ.get("SLURM_JOB_ID"):
                logger.info("periodic checkpoint written, releasing allocation for requeue")
                os._exit(0)  # ruleid: MLS307

        if preemption.requested:
            logger.warning("preempted after epoch %d, checkpoint saved", epoch)
            break

        test_stats, coco_evaluator = engine.evaluate(model, criterion, postprocessors, data_loader_val,
                                                     dataset_val.coco, device, args.output_dir)
        ap = test_stats.get("coco_eval_bbox", [0.0])[0]
        log_stats = {**{f"train_{k}": v for k, v in train_stats.items()},
                     **{f"test_{k}": v for k, v in test_stats.items()},
                     "epoch": epoch, "n_parameters": n_parameters}

        if utils.is_main_process():
            with (output_dir / "log.txt").open("a") as f:
                f.write(json.dumps(log_stats) + "\n")
            if ap > best_ap:
                best_ap, evals_without_gain = ap, 0
                state["best_ap"] = best_ap
                torch.save(state, output_dir / "checkpoint_best.pth")
            else:
                evals_without_gain += 1
            if args.patience > 0 and evals_without_gain >= args.patience:
                logger.info("no AP improvement for %d evals, stopping", evals_without_gain)
                break  # todoruleid: family 3 (missed)

    watchdog.stop()
    throttle.remove()
    total_time = str(datetime.timedelta(seconds=int(time.time() - start_time)))
    logger.info("Training time %s, best AP %.4f", total_time, best_ap)
    if args.distributed:
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    parser = argparse.ArgumentParser("DETR training and evaluation script", parents=[get_args_parser()])
    args = parser.parse_args()
    if args.output_dir:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    main(args)
