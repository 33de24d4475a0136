# ruff: noqa
# Hold-out batch 593 (textbook, TimeSformer video action recognition with DDP). Measured once in session 27 (round 158): 22/30 (73%) at medium+.
"""Single-view validation and multi-view (clips x crops) testing."""
import json
import logging
import os
import time

import numpy as np
import torch
import torch.distributed as dist

import utils

logger = logging.getLogger("vidrec.eval")


@torch.no_grad()
def accuracy(output, target, topk=(1,)):
    """Top-k accuracy in percent."""
    maxk = min(max(topk), output.size(1))
    _, pred = output.topk(maxk, dim=1, largest=True, sorted=True)
    pred = pred.t()
    correct = pred.eq(target.reshape(1, -1).expand_as(pred))
    return [correct[:min(k, maxk)].reshape(-1).float().sum(0) * 100.0 / target.size(0) for k in topk]


@torch.no_grad()
def evaluate(loader, model, device, amp_dtype=torch.bfloat16, header="Val:"):
    """Single centre-clip / centre-crop evaluation used during training."""
    criterion = torch.nn.CrossEntropyLoss()
    metric_logger = utils.MetricLogger(delimiter="  ")
    model.eval()

    for batch in metric_logger.log_every(loader, 20, header):
        if batch is None:
            continue
        videos, target = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=amp_dtype):
            output = model(videos)
            loss = criterion(output, target)
        acc1, acc5 = accuracy(output.float(), target, topk=(1, 5))
        n = videos.size(0)
        metric_logger.update(loss=loss.item())
        metric_logger.meters["acc1"].update(acc1.item(), n=n)
        metric_logger.meters["acc5"].update(acc5.item(), n=n)

    metric_logger.synchronize_between_processes()
    stats = {k: meter.global_avg for k, meter in metric_logger.meters.items()}
    logger.info("%s acc@1 %.3f acc@5 %.3f loss %.4f", header, stats["acc1"], stats["acc5"], stats["loss"])
    return stats


@torch.no_grad()
def multi_view_test(loader, model, device, num_videos, num_classes, amp_dtype=torch.bfloat16,
                    output_dir=None, conf_floor=0.05):
    """Average softmax scores over all clips x crops of each video, then score per video.

    Each rank accumulates the views it saw into dense (num_videos, num_classes) buffers,
    which are summed across ranks.  DistributedSampler padding duplicates a few views;
    dividing by the per-video view count keeps those averages correct.
    """
    model.eval()
    scores = torch.zeros(num_videos, num_classes, device=device, dtype=torch.float32)
    counts = torch.zeros(num_videos, device=device, dtype=torch.float32)
    labels = torch.full((num_videos,), -1, device=device, dtype=torch.long)

    start = time.time()
    for it, batch in enumerate(loader):
        if batch is None:
            continue
        videos, target, video_idx = (t.to(device, non_blocking=True) for t in batch)
        with torch.autocast(device_type="cuda", dtype=amp_dtype):
            logits = model(videos)
        probs = logits.float().softmax(dim=-1)
        scores.index_add_(0, video_idx, probs)
        counts.index_add_(0, video_idx, torch.ones_like(video_idx, dtype=torch.float32))
        labels[video_idx] = target
        if it % 50 == 0 and utils.is_main_process():
            logger.info("multi-view test [%d/%d] %.1fs", it, len(loader), time.time() - start)

    if utils.get_world_size() > 1:
        dist.all_reduce(counts)
        if utils.is_main_process():
            dist.all_reduce(scores)  # ruleid: MLS307
        dist.all_reduce(labels, op=dist.ReduceOp.MAX)

    if not utils.is_main_process():
        return None

    seen = counts > 0
    scores = scores[seen] / counts[seen].unsqueeze(1)
    labels = labels[seen]
    # videos whose views all decoded to blank frames produce flat score vectors
    decoded = scores.max(dim=1).values > conf_floor  # ruleid: MLS306
    scores, labels = scores[decoded], labels[decoded]  # ruleid: MLS306

    top1, top5 = accuracy(scores, labels, topk=(1, 5))
    results = {
        "top1": top1.item(),
        "top5": top5.item(),
        "num_videos": int(seen.sum().item()),
        "views_per_video": float(counts[counts > 0].mean().item()),
    }
    if output_dir:
        np.savez_compressed(os.path.join(output_dir, "test_scores.npz"), scores=scores.cpu().numpy())
        with open(os.path.join(output_dir, "test_results.json"), "w") as f:
            json.dump(results, f, indent=2)
    logger.info("multi-view test: top1 %.2f top5 %.2f (%d videos)", results["top1"], results["top5"],
                results["num_videos"])
    return results

