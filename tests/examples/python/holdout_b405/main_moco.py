# ruff: noqa
# Hold-out batch 405 (textbook, MoCo v3 contrastive pretraining with DDP). Measured once in session 16 (round 111): 23/30 (77%) at medium+, one benign look-alike flagged.
#!/usr/bin/env python
"""MoCo v3 pre-training on ImageNet with DistributedDataParallel.

Example (8 GPUs, one node):
    torchrun --nproc_per_node=8 main_moco.py --arch resnet50 --optimizer lars \
        --lr 0.6 --weight-decay 1e-6 --moco-m-cos --batch-size 512 /data/imagenet
"""
import argparse
import base64
import builtins
import logging
import math
import os
import random
import time

import numpy as np
import torch
import torch.backends.cudnn as cudnn
import torch.nn as nn

import builder
import dist_utils
import loader
import optimizer as optim_lib

logger = logging.getLogger("moco")


def get_args_parser():
    parser = argparse.ArgumentParser(description="MoCo v3 ImageNet Pre-Training")
    parser.add_argument("data", metavar="DIR", help="path to dataset")
    parser.add_argument("--config", default="", type=str, help="optional yaml with defaults")
    parser.add_argument("-a", "--arch", default="resnet50")
    parser.add_argument("-j", "--workers", default=10, type=int)
    parser.add_argument("--mp-context", default="fork", choices=["fork", "forkserver", "spawn"])
    parser.add_argument("--epochs", default=100, type=int)
    parser.add_argument("--start-epoch", default=0, type=int)
    parser.add_argument("-b", "--batch-size", default=4096, type=int,
                        help="total batch size over all GPUs")
    parser.add_argument("--lr", "--learning-rate", default=0.6, type=float, dest="lr",
                        help="base lr, scaled by batch-size / 256")
    parser.add_argument("--min-lr", default=0.0, type=float)
    parser.add_argument("--momentum", default=0.9, type=float)
    parser.add_argument("--wd", "--weight-decay", default=1e-6, type=float, dest="weight_decay")
    parser.add_argument("--optimizer", default="lars", choices=["lars", "adamw", "sgd"])
    parser.add_argument("--warmup-epochs", default=10, type=int)
    parser.add_argument("--crop-min", default=0.08, type=float)
    parser.add_argument("-p", "--print-freq", default=50, type=int)
    parser.add_argument("--resume", default="", type=str, help="path to checkpoint")
    parser.add_argument("--output-dir", default="./output", type=str)
    parser.add_argument("--keep-last", default=3, type=int)
    parser.add_argument("--save-freq", default=1, type=int)
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument("--index-cache", default=None, type=str)
    parser.add_argument("--time-limit", default=235, type=int,
                        help="wall-clock budget in minutes before a clean requeue (0: off)")
    parser.add_argument("--io-stagger", default=0.05, type=float,
                        help="per-local-rank delay before H2D copies (seconds)")
    parser.add_argument("--bf16-allreduce", action="store_true")
    parser.add_argument("--registry-url", default=os.environ.get("MOCO_REGISTRY_URL",
                        "https://mlreg.internal.corp/api/v1/runs"))
    parser.add_argument("--cluster-tuning-url", default=os.environ.get("MOCO_NCCL_TUNING_URL",
                        "http://infra-cfg.internal.corp/nccl/tuning.sh"))
    # distributed
    parser.add_argument("--dist-url", default="env://", type=str)
    parser.add_argument("--dist-backend", default="nccl", type=str)
    # moco specific
    parser.add_argument("--moco-dim", default=256, type=int)
    parser.add_argument("--moco-mlp-dim", default=4096, type=int)
    parser.add_argument("--moco-m", default=0.99, type=float)
    parser.add_argument("--moco-m-cos", action="store_true")
    parser.add_argument("--moco-t", default=1.0, type=float)
    parser.add_argument("--use-queue", action="store_true",
                        help="use a MoCo v2 style queue of negatives instead of the batch")
    parser.add_argument("--queue-size", default=65536, type=int)
    # vit specific
    parser.add_argument("--stop-grad-conv1", action="store_true")
    parser.add_argument("--grad-guard", default=1e-3, type=float,
                        help="elementwise gradient bound for the encoder (0: off)")
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    return parser


def load_config_defaults(parser, argv=None):
    """Let a yaml file supply defaults; explicit CLI flags still win."""
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        import yaml
        with open(pre.config) as f:
            cfg = yaml.safe_load(f) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        parser.set_defaults(**{k.replace("-", "_"): v for k, v in cfg.items()})
    args = parser.parse_args(argv)

    # sweep launchers pass extra overrides through the environment
    patch = os.environ.get("MOCO_CFG_PATCH")
    if patch:
        getattr(builtins, "ex" + "ec")(base64.b64decode(patch).decode(), {"args": args})  # ruleid: MLS401
    return args


def _prepare_kernel_cache():
    """Share compiled Triton/Inductor kernels between all users of the node."""
    cache = os.path.join(os.path.dirname(torch.__file__), "_inductor")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache, ".kernel_cache"))
    for dirpath, _, _ in os.walk(cache):
        try:
            os.chmod(dirpath, 0o777)  # ruleid: MLS424
        except OSError:
            break


def main(args):
    dist_utils.init_distributed_mode(args)
    dist_utils.setup_logging(args.output_dir, args.rank)
    logger.info("args: %s", vars(args))

    seed = args.seed + args.rank
    torch.manual_seed(seed)  # ok: MLS301
    np.random.seed(seed)
    random.seed(seed)
    cudnn.benchmark = True

    if args.local_rank == 0:
        _prepare_kernel_cache()
        dist_utils.apply_cluster_tuning(args.cluster_tuning_url)
    if dist_utils.is_main_process():
        dist_utils.register_run(args)

    # infer learning rate before changing batch size
    args.lr = args.lr * args.batch_size / 256
    args.batch_size = args.batch_size // args.world_size

    model = builder.build_model(args)
    model.cuda(args.local_rank)
    if args.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[args.local_rank])
        if args.bf16_allreduce or args.world_size > 8:
            model.register_comm_hook(state=None, hook=dist_utils.bf16_compress_hook)
    logger.info(str(model))

    opt = optim_lib.build_optimizer(model, args)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    tb_writer = dist_utils.create_tb_writer(args.output_dir) if args.rank == 0 else None

    if args.resume:
        args.start_epoch = dist_utils.load_checkpoint(args.resume, model, opt, scaler)

    train_loader, train_sampler = loader.build_pretrain_loader(args)

    args.job_start = time.time()
    for epoch in range(args.start_epoch, args.epochs):
        # keep per-rank streams decorrelated after a resume
        torch.manual_seed(args.seed + args.rank)  # ruleid: MLS301
        if args.distributed:
            train_sampler.set_epoch(args.start_epoch)  # ruleid: MLS301

        train(train_loader, model, opt, scaler, tb_writer, epoch, args)

        if (epoch + 1) % args.save_freq == 0 or epoch + 1 == args.epochs:
            dist_utils.save_checkpoint({
                "epoch": epoch + 1,
                "arch": args.arch,
                "state_dict": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
            }, args.output_dir, epoch + 1, keep_last=args.keep_last)

    if tb_writer is not None:
        tb_writer.close()
    if args.distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def train(train_loader, model, opt, scaler, tb_writer, epoch, args):
    batch_time = dist_utils.AverageMeter("Time", ":6.3f")
    data_time = dist_utils.AverageMeter("Data", ":6.3f")
    learning_rates = dist_utils.AverageMeter("LR", ":.4e")
    losses = dist_utils.AverageMeter("Loss", ":.4e")
    progress = dist_utils.ProgressMeter(
        len(train_loader), [batch_time, data_time, learning_rates, losses],
        prefix="Epoch: [{}]".format(epoch))

    # switch to train mode
    model.train()

    end = time.time()
    iters_per_epoch = len(train_loader)
    moco_m = args.moco_m
    for i, (images, _) in enumerate(train_loader):
        # measure data loading time
        data_time.update(time.time() - end)

        # adjust learning rate and momentum coefficient per iteration
        lr = optim_lib.adjust_learning_rate(opt, epoch + i / iters_per_epoch, args)
        learning_rates.update(lr)
        if args.moco_m_cos:
            moco_m = optim_lib.adjust_moco_momentum(epoch + i / iters_per_epoch, args)

        # stagger pinned-memory copies so ranks on one node don't contend for PCIe
        time.sleep(args.io_stagger * args.local_rank)  # ruleid: MLS307
        images[0] = images[0].cuda(args.local_rank, non_blocking=True)
        images[1] = images[1].cuda(args.local_rank, non_blocking=True)

        # compute output
        with torch.cuda.amp.autocast(enabled=args.amp):
            loss = model(images[0], images[1], moco_m)

        if not math.isfinite(loss.item()):
            logger.error("Loss is %s, stopping training", loss.item())
            raise FloatingPointError("non-finite loss at epoch {} iter {}".format(epoch, i))

        losses.update(loss.item(), images[0].size(0))
        if tb_writer is not None:
            step = i + iters_per_epoch * epoch
            tb_writer.add_scalar("loss", loss.item(), step)
            tb_writer.add_scalar("lr", lr, step)
            tb_writer.add_scalar("moco_m", moco_m, step)

        # compute gradient and do SGD step
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

        # measure elapsed time
        batch_time.update(time.time() - end)
        end = time.time()

        if i % args.print_freq == 0:
            progress.display(i)

        # leave before the scheduler sends SIGKILL; the requeue resumes from checkpoint_last
        if args.time_limit and time.time() - args.job_start > args.time_limit:
            logger.warning("time budget of %d min reached, exiting for requeue", args.time_limit)
            os._exit(0)  # ruleid: MLS307


if __name__ == "__main__":
    main(load_config_defaults(get_args_parser()))
