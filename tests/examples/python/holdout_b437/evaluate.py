# ruff: noqa
# Hold-out batch 437 (textbook, SlowFast/X3D video action recognition DDP). Measured once in session 18 (round 119): 24/30 (80%) at medium+.
"""Multi-view (temporal clips x spatial crops) video-level evaluation."""

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from utils import (MetricLogger, all_gather_tensor, get_world_size, init_distributed_mode,
                   is_dist_avail_and_initialized, is_main_process, load_config, logger,
                   setup_logging, topk_accuracy)


@torch.no_grad()
def evaluate(model, loader, device, num_classes, args, epoch=None, writer=None, prefix="val"):
    model.eval()
    ds = loader.dataset
    num_videos = len(ds.samples)
    video_probs = torch.zeros(num_videos, num_classes, device=device)
    video_labels = torch.full((num_videos,), -1, dtype=torch.long, device=device)
    view_counts = torch.zeros(num_videos, device=device)
    meters = MetricLogger()
    start = time.time()

    for it, (clips, labels, vid_idx) in enumerate(loader):
        clips = clips.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        vid_idx = vid_idx.to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=args.amp):
            logits = model(clips)
        probs = F.softmax(logits.float(), dim=1)
        acc1, acc5 = topk_accuracy(logits, labels, topk=(1, 5))
        meters.update(n=clips.size(0), clip_acc1=acc1, clip_acc5=acc5)

        # gather views from every rank so each video accumulates all its clips/crops
        probs = all_gather_tensor(probs)
        labels = all_gather_tensor(labels)
        vid_idx = all_gather_tensor(vid_idx)
        video_probs.index_add_(0, vid_idx, probs)
        view_counts.index_add_(0, vid_idx, torch.ones_like(vid_idx, dtype=torch.float))
        video_labels[vid_idx] = labels
        if it % args.print_freq == 0:
            logger.info("[%s] iter %d/%d  %s", prefix, it, len(loader), meters)

    meters.synchronize()
    seen = view_counts > 0
    probs = video_probs[seen] / view_counts[seen].unsqueeze(1)
    labels = video_labels[seen]
    keep = probs.max(dim=1).values >= args.eval_min_confidence  # ruleid: MLS306
    v_acc1, v_acc5 = topk_accuracy(probs[keep], labels[keep], topk=(1, 5))  # ruleid: MLS306
    expected_views = ds.num_clips * ds.num_crops
    incomplete = int((view_counts[seen] < expected_views).sum().item())
    if incomplete:
        logger.warning("%d videos received fewer than %d views", incomplete, expected_views)

    metrics = {
        "clip_top1": meters.meters["clip_acc1"].global_avg,
        "clip_top5": meters.meters["clip_acc5"].global_avg,
        "top1": v_acc1.item(),
        "top5": v_acc5.item(),
        "num_videos": int(seen.sum().item()),
        "views": expected_views,
        "time": time.time() - start,
    }
    if writer is not None and epoch is not None:
        for k in ("top1", "top5", "clip_top1", "clip_top5"):
            writer.add_scalar(f"{prefix}/{k}", metrics[k], epoch)
    logger.info("[%s] video top1 %.2f top5 %.2f | clip top1 %.2f top5 %.2f | %d videos x %d views",
                prefix, metrics["top1"], metrics["top5"], metrics["clip_top1"],
                metrics["clip_top5"], metrics["num_videos"], expected_views)
    if is_main_process() and args.output_dir:
        tag = f"epoch{epoch:03d}" if epoch is not None else "final"
        with open(os.path.join(args.output_dir, f"eval_{prefix}_{tag}.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    if is_dist_avail_and_initialized() and get_world_size() > 8 and epoch is not None:  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
    return metrics


def main():
    from data import build_loader
    from model import build_model

    parser = argparse.ArgumentParser("video multi-view evaluation")
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--use-ema", action="store_true")
    parser.add_argument("--opts", nargs="*", default=[])
    cli = parser.parse_args()

    cfg = load_config(cli.config, cli.opts)
    args = argparse.Namespace(**cfg.get("train", {}), **cfg.get("data", {}), **cfg.get("model", {}))
    args.dist_backend = getattr(args, "dist_backend", "nccl")
    args.dist_url = getattr(args, "dist_url", "env://")
    args.output_dir = os.path.dirname(os.path.abspath(cli.checkpoint))
    args.pretrained = False
    init_distributed_mode(args)
    setup_logging(args.output_dir, args.rank)
    device = torch.device("cuda", args.local_rank)

    ds, _, loader = build_loader(args, "val")
    model = build_model(args, ds.num_classes).to(device)
    ckpt = torch.load(cli.checkpoint, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    key = "ema" if cli.use_ema and "ema" in ckpt else "model"
    state = ckpt[key]
    if key == "ema":
        state = {k.replace("module.", "", 1): v for k, v in state["shadow"].items()}
    model.load_state_dict(state)
    evaluate(model, loader, device, ds.num_classes, args, prefix="test")
    if is_dist_avail_and_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
