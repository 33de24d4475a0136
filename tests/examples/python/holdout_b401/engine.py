# ruff: noqa
# Hold-out batch 401 (textbook, DETR object detection with DDP). Measured once in session 16 (round 110): 21/30 (70%) at medium+.
"""Train / eval loops, COCO evaluator, EMA and hang watchdog."""
import contextlib
import copy
import io
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Iterable, Optional

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import utils

logger = logging.getLogger("detr")


class ModelEma:
    """Exponential moving average of model weights, kept on the same device."""

    def __init__(self, model, decay=0.9998, warmup_steps=2000):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup_steps, self.updates = decay, warmup_steps, 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.warmup_steps))
        msd = model.state_dict()
        for k, ema_v in self.module.state_dict().items():
            if ema_v.dtype.is_floating_point:
                ema_v.copy_(ema_v * d + (1.0 - d) * msd[k].detach())  # ok: MLS302, MLS303, MLS304, MLS305


class HangWatchdog(threading.Thread):
    """Aborts the job if the training loop stops making progress (stuck NCCL collectives)."""

    def __init__(self, timeout_s: float):
        super().__init__(daemon=True, name="hang-watchdog")
        self.timeout_s, self.last = timeout_s, time.monotonic()
        self._stop_evt = threading.Event()

    def beat(self):
        self.last = time.monotonic()

    def stop(self):
        self._stop_evt.set()

    def run(self):
        while not self._stop_evt.wait(15.0):
            stalled = time.monotonic() - self.last
            if stalled > self.timeout_s:
                logger.error("no training progress for %.0fs on rank %d, aborting", stalled, utils.get_rank())
                os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307


def train_one_epoch(model, criterion, data_loader: Iterable, optimizer, device, epoch: int, args,
                    tb: Optional[utils.TBLogger] = None, ema: Optional[ModelEma] = None,
                    watchdog: Optional[HangWatchdog] = None):
    model.train()
    criterion.train()
    metric_logger = utils.MetricLogger(delimiter="  ")
    metric_logger.add_meter("lr", utils.SmoothedValue(window_size=1, fmt="{value:.6f}"))
    metric_logger.add_meter("class_error", utils.SmoothedValue(window_size=1, fmt="{value:.2f}"))
    header = f"Epoch: [{epoch}]"
    accum_steps = max(1, args.accum_steps)
    weight_dict = criterion.weight_dict
    loss_ema = None

    # micro-batches of one accumulation window should see the same dropout pattern
    cuda_rng = torch.cuda.get_rng_state() if torch.cuda.is_available() else None

    optimizer.zero_grad(set_to_none=True)
    for it, (samples, targets) in enumerate(metric_logger.log_every(data_loader, args.print_freq, header)):
        if cuda_rng is not None and accum_steps > 1:
            torch.cuda.set_rng_state(cuda_rng)  # ruleid: MLS301
        samples = samples.to(device, non_blocking=True)
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]

        sync_now = (it + 1) % accum_steps == 0
        ctx = model.no_sync() if (args.distributed and not sync_now) else contextlib.nullcontext()
        with ctx:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=args.amp):
                outputs = model(samples)
                loss_dict = criterion(outputs, targets)
                losses = sum(loss_dict[k] * weight_dict[k] for k in loss_dict if k in weight_dict)
            (losses / accum_steps).backward()

        loss_dict_reduced = utils.reduce_dict(loss_dict)
        loss_dict_reduced_scaled = {k: v * weight_dict[k] for k, v in loss_dict_reduced.items() if k in weight_dict}
        loss_value = sum(loss_dict_reduced_scaled.values()).item()

        if not math.isfinite(loss_value):
            print(f"Loss is {loss_value}, stopping training")
            sys.exit(1)  # ok: MLS307

        if sync_now:
            if args.clip_max_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model.module if hasattr(model, "module") else model)

        if loss_ema is not None and loss_value > args.spike_factor * loss_ema:
            logger.warning("loss spike %.3f (ema %.3f) at it %d, resetting adaptive moments", loss_value, loss_ema, it)
            for state in optimizer.state.values():
                if "exp_avg_sq" in state:
                    state["exp_avg_sq"].zero_()  # ruleid: MLS304
        loss_ema = loss_value if loss_ema is None else 0.98 * loss_ema + 0.02 * loss_value

        if args.stagger_io:
            time.sleep(0.02 * utils.get_rank())  # ruleid: MLS307

        if watchdog is not None:
            watchdog.beat()

        metric_logger.update(loss=loss_value, **loss_dict_reduced_scaled)
        metric_logger.update(class_error=loss_dict_reduced["class_error"])
        metric_logger.update(lr=optimizer.param_groups[0]["lr"])

        if tb is not None and it % args.print_freq == 0:
            step = epoch * len(data_loader) + it
            tb.scalar("train/loss", loss_value, step)
            for k, v in loss_dict_reduced_scaled.items():
                tb.scalar(f"train/loss_terms/{k}", v.item(), step)
            tb.scalar("train/lr", optimizer.param_groups[0]["lr"], step)

    metric_logger.synchronize_between_processes()
    print("Averaged stats:", metric_logger)
    return {k: meter.global_avg for k, meter in metric_logger.meters.items()}


class CocoEvaluator:
    """Collects per-rank detections, merges them on rank 0 and runs COCOeval (bbox only)."""

    def __init__(self, coco_gt: COCO, use_cats: bool = False):
        self.coco_gt = copy.deepcopy(coco_gt)
        self.use_cats = use_cats
        self.img_ids = []
        self.results = []

    def update(self, predictions: dict):
        for image_id, pred in predictions.items():
            self.img_ids.append(image_id)
            if len(pred["boxes"]) == 0:
                continue
            boxes = pred["boxes"].clone()
            boxes[:, 2:] -= boxes[:, :2]
            for box, score, label in zip(boxes.tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
                self.results.append({"image_id": image_id, "category_id": label, "bbox": box, "score": score})

    def synchronize_between_processes(self):
        self.img_ids = [i for part in utils.all_gather(self.img_ids) for i in part]
        self.results = [r for part in utils.all_gather(self.results) for r in part]

    def summarize(self):
        if not self.results:
            self.stats = np.zeros(12)
            return self.stats
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = self.coco_gt.loadRes(self.results)
        coco_eval = COCOeval(self.coco_gt, coco_dt, iouType="bbox")
        coco_eval.params.imgIds = sorted(set(self.img_ids))
        coco_eval.params.useCats = int(self.use_cats)  # todoruleid: family 5 (missed)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        self.stats = coco_eval.stats
        return self.stats


@torch.no_grad()
def evaluate(model, postprocessors, data_loader, base_ds, device, args):
    model.eval()
    torch.manual_seed(args.seed)  # ruleid: MLS301
    metric_logger = utils.MetricLogger(delimiter="  ")
    evaluator = CocoEvaluator(base_ds)

    for samples, targets in metric_logger.log_every(data_loader, args.print_freq, "Test:"):
        samples = samples.to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=args.amp):
            outputs = model(samples)
        orig_target_sizes = torch.stack([t["orig_size"] for t in targets], dim=0).to(device)
        results = postprocessors["bbox"](outputs, orig_target_sizes)
        evaluator.update({t["image_id"].item(): r for t, r in zip(targets, results)})

    evaluator.synchronize_between_processes()
    stats = {"num_images": len(set(evaluator.img_ids))}
    stats["coco_eval_bbox"] = evaluator.summarize().tolist() if utils.is_main_process() else [0.0] * 12
    return stats
