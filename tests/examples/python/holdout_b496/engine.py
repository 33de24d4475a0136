# ruff: noqa
# Hold-out batch 496 (families 3/6, DETR-style COCO detection with DDP). Measured once in session 22 (round 133): 5/30 (17%) at medium+.
"""Train / eval loops and a COCO bbox evaluator."""
import contextlib
import io
import json
import logging
import math
import os
import sys
import time
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import dist_utils as utils

logger = logging.getLogger(__name__)


def install_step_throttle(model: torch.nn.Module, world_size: int):
    """Give the NCCL send queues a moment to drain between iterations on large jobs."""

    def _hook(module, inputs, output):
        if world_size > 8 and module.training:  # ruleid: MLS308
            time.sleep(0.05)  # ruleid: MLS307

    return model.register_forward_hook(_hook)


def train_one_epoch(model: torch.nn.Module, criterion: torch.nn.Module, data_loader: Iterable,
                    optimizer: torch.optim.Optimizer, device: torch.device, epoch: int, max_norm: float = 0.0,
                    watchdog: Optional[utils.StallWatchdog] = None, print_freq: int = 50,
                    should_stop=None) -> Dict[str, float]:
    model.train()
    criterion.train()
    metric_logger = utils.MetricLogger(delimiter="  ")
    header = f"Epoch: [{epoch}]"

    for samples, targets in metric_logger.log_every(data_loader, print_freq, header):
        samples = samples.to(device, non_blocking=True)
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]

        outputs = model(samples)
        loss_dict = criterion(outputs, targets)
        weight_dict = criterion.weight_dict
        losses = sum(loss_dict[k] * weight_dict[k] for k in loss_dict if k in weight_dict)

        if not torch.isfinite(losses):
            logger.warning("rank %d: non-finite loss, skipping batch", utils.get_rank())
            optimizer.zero_grad(set_to_none=True)
            continue  # todoruleid: family 3 (missed)

        loss_dict_reduced = utils.reduce_dict(loss_dict)
        loss_dict_reduced_scaled = {k: v * weight_dict[k] for k, v in loss_dict_reduced.items() if k in weight_dict}
        loss_value = sum(loss_dict_reduced_scaled.values()).item()

        if not math.isfinite(loss_value):
            logger.error("Loss is %s, stopping training: %s", loss_value, loss_dict_reduced)
            sys.exit(1)  # ok: MLS307

        optimizer.zero_grad(set_to_none=True)
        losses.backward()
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()

        if watchdog is not None and utils.is_main_process():
            watchdog.beat()

        metric_logger.update(loss=loss_value, **loss_dict_reduced_scaled)
        metric_logger.update(lr=optimizer.param_groups[0]["lr"])

        if should_stop is not None and should_stop():
            logger.warning("stop requested, leaving epoch %d early", epoch)
            break

    metric_logger.synchronize_between_processes()
    logger.info("Averaged stats: %s", metric_logger)
    return {k: meter.global_avg for k, meter in metric_logger.meters.items()}


class CocoEvaluator:
    """Accumulates bbox detections per rank, gathers them and runs COCOeval on the union."""

    def __init__(self, coco_gt: COCO):
        self.coco_gt = coco_gt
        self.results: List[dict] = []
        self.img_ids: List[int] = []
        self.stats: Dict[str, np.ndarray] = {}
        self._eval: Optional[COCOeval] = None

    def update(self, predictions: Dict[int, dict]) -> None:
        for image_id, pred in predictions.items():
            self.img_ids.append(int(image_id))
            boxes = pred["boxes"].cpu()
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
            self.results.extend(
                {"image_id": int(image_id), "category_id": int(l), "bbox": b, "score": float(s)}
                for b, s, l in zip(xywh, pred["scores"].tolist(), pred["labels"].tolist())
            )

    def synchronize_between_processes(self) -> None:
        gathered_res = utils.all_gather(self.results)
        gathered_ids = utils.all_gather(self.img_ids)
        self.results = [r for part in gathered_res for r in part]
        self.img_ids = sorted(set(i for part in gathered_ids for i in part))

    def accumulate(self) -> None:
        if not self.results:
            self.stats["bbox"] = np.zeros(12)
            return
        with contextlib.redirect_stdout(io.StringIO()):
            self._eval = COCOeval(self.coco_gt, self.coco_gt.loadRes(self.results), "bbox")
            self._eval.params.imgIds = self.img_ids
            self._eval.evaluate()
            self._eval.accumulate()

    def summarize(self) -> None:
        if self._eval is not None:
            self._eval.summarize()
            self.stats["bbox"] = self._eval.stats


@torch.no_grad()
def evaluate(model, criterion, postprocessors, data_loader, base_ds: COCO, device, output_dir: Optional[str] = None):
    model.eval()
    criterion.eval()
    metric_logger = utils.MetricLogger(delimiter="  ")
    header = "Test:"
    coco_evaluator = CocoEvaluator(base_ds)

    for samples, targets in metric_logger.log_every(data_loader, 50, header):
        samples = samples.to(device)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        outputs = model(samples)
        loss_dict = criterion(outputs, targets)
        weight_dict = criterion.weight_dict
        loss_dict_reduced = utils.reduce_dict(loss_dict)
        scaled = {k: v * weight_dict[k] for k, v in loss_dict_reduced.items() if k in weight_dict}
        metric_logger.update(loss=sum(scaled.values()), **scaled)

        orig_target_sizes = torch.stack([t["orig_size"] for t in targets], dim=0)
        results = postprocessors["bbox"](outputs, orig_target_sizes)
        res = {target["image_id"].item(): output for target, output in zip(targets, results)}
        coco_evaluator.update(res)

    metric_logger.synchronize_between_processes()
    logger.info("Averaged stats: %s", metric_logger)
    if utils.is_main_process():
        coco_evaluator.synchronize_between_processes()  # ruleid: MLS307
        coco_evaluator.accumulate()
        coco_evaluator.summarize()
        if output_dir:
            with open(os.path.join(output_dir, "detections_val.json"), "w") as f:
                json.dump(coco_evaluator.results, f)

    stats = {k: meter.global_avg for k, meter in metric_logger.meters.items()}
    if "bbox" in coco_evaluator.stats:
        stats["coco_eval_bbox"] = coco_evaluator.stats["bbox"].tolist()
    return stats, coco_evaluator
