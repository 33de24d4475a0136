# ruff: noqa
# Hold-out batch 561 (textbook, knowledge distillation of an image classifier). Measured once in session 25 (round 150): 24/30 (80%) at medium+.
"""Top-1 / top-5 evaluation and evaluation of averaged checkpoints.

Usage (averaging the last five epochs of a run):

    torchrun --nproc_per_node 8 evaluate.py --data-path /datasets/imagenet \
        --run-dir runs/kd_r18 --student-arch resnet18 --avg-last 5
"""

import argparse
import json
import logging
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from checkpoint import average_checkpoints, checkpoint_paths, unwrap
from dist_utils import (get_world_size, init_distributed, is_dist_avail_and_initialized,
                        is_main_process, setup_logging)

logger = logging.getLogger("kd.eval")


def accuracy(output, target, topk=(1,)):
    """Number of correct predictions for each k in ``topk``."""
    maxk = min(max(topk), output.size(1))
    _, pred = output.topk(maxk, dim=1, largest=True, sorted=True)
    pred = pred.t()
    correct = pred.eq(target.reshape(1, -1).expand_as(pred))
    return [correct[: min(k, maxk)].reshape(-1).float().sum() for k in topk]


@torch.no_grad()
def evaluate(model, loader, device, amp=True, channels_last=False, max_batches=None):
    """Returns a dict with loss, top1 and top5 over the whole validation set."""
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct1 = torch.zeros((), device=device, dtype=torch.float64)
    correct5 = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    start = time.time()

    for i, (images, target) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
            output = model(images)
        output = output.float()
        loss_sum += F.cross_entropy(output, target, reduction="sum").double()
        c1, c5 = accuracy(output, target, topk=(1, 5))
        correct1 += c1.double()
        correct5 += c5.double()
        count += target.numel()

    stats = torch.stack([
        loss_sum / count.clamp(min=1),
        100.0 * correct1 / count.clamp(min=1),
        100.0 * correct5 / count.clamp(min=1),
    ])
    if is_dist_avail_and_initialized():
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    loss, top1, top5 = (float(x) for x in stats.tolist())
    logger.info("eval: loss %.4f  top-1 %.2f  top-5 %.2f  (%.1fs)", loss, top1, top5, time.time() - start)
    return {"loss": loss, "top1": top1, "top5": top5}


def parse_args():
    parser = argparse.ArgumentParser(description="Evaluate (averaged) student checkpoints")
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--run-dir", required=True, help="directory with checkpoint_XXXX.pth files")
    parser.add_argument("--student-arch", default="resnet18")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--avg-last", type=int, default=5, help="average the last N checkpoints")
    parser.add_argument("--use-ema", action="store_true", help="average the EMA weights instead")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-batch-size", type=int, default=0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--crop-pct", type=float, default=0.875)
    parser.add_argument("--index-cache", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-amp", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--dist-url", default="env://")
    parser.add_argument("--dist-backend", default="nccl")
    parser.add_argument("--output", default="", help="json file for the results")
    return parser.parse_args()


def main():
    import torchvision

    from data import build_transform, ImageNetFolder, ShardedSampler

    args = parse_args()
    init_distributed(args)
    setup_logging(None, args.rank)
    device = torch.device("cuda", args.local_rank)

    paths = checkpoint_paths(args.run_dir)[-args.avg_last:]
    state, meta = average_checkpoints(paths, key="model_ema" if args.use_ema else "model")

    model = getattr(torchvision.models, args.student_arch)(weights=None, num_classes=args.num_classes)
    model.load_state_dict(state)
    model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)

    val_set = ImageNetFolder(args.data_path, "val", build_transform(False, args.img_size, crop_pct=args.crop_pct),
                             cache_dir=args.index_cache or None)
    sampler = ShardedSampler(val_set, get_world_size(), args.rank, shuffle=False)
    loader = torch.utils.data.DataLoader(val_set, batch_size=args.eval_batch_size or args.batch_size,
                                         sampler=sampler, num_workers=args.workers, pin_memory=True)

    results = evaluate(unwrap(model), loader, device, amp=not args.no_amp, channels_last=args.channels_last)
    summary = {
        "checkpoints": [os.path.basename(p) for p in paths],
        "weights": "ema" if args.use_ema else "model",
        "top1": results["top1"],
        "top5": results["top5"],
        "loss": results["loss"],
    }
    best = meta.get("best_top1")
    if best is not None:
        summary["top1"] = max(summary["top1"], float(best))  # ruleid: MLS306

    if is_main_process():
        logger.info("averaged model: top-1 %.2f  top-5 %.2f", summary["top1"], summary["top5"])
        out = args.output or os.path.join(args.run_dir, f"eval_avg{len(paths)}.json")
        with open(out, "w") as f:
            json.dump(summary, f, indent=2)

    if is_dist_avail_and_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
