# ruff: noqa
# Hold-out batch 446 (adversarial, ViT classification timm/DeiT style). Measured once in session 19 (round 121): 8/30 (27%) at medium+; one benign line flagged (MLS302 on a head init scale).
#!/usr/bin/env python3
"""ImageNet validation for ViT checkpoints; ``evaluate`` is shared with ``train.py``."""
import argparse
import json
import logging
import os
import time
from collections import OrderedDict

import torch
import torch.nn as nn

from data import ImageFolder, build_transform, create_loader
from utils import DIST, AverageMeter, init_distributed, reduce_tensor
from vit import create_model

_logger = logging.getLogger("validate")

_TOPK = {"top1": 1, "top5": 5}


def accuracy(output, target, topk=(1,)):
    """Top-k accuracy (percent) for each k in ``topk``."""
    maxk = min(max(topk), output.size(1))
    batch_size = target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    pred = pred.t()
    correct = pred.eq(target.reshape(1, -1).expand_as(pred))
    return [correct[:min(k, maxk)].reshape(-1).float().sum(0) * 100.0 / batch_size for k in topk]


@torch.no_grad()
def evaluate(model, loader, loss_fn, amp_dtype=None, log_interval=50, log_prefix=""):
    meters = {"loss": AverageMeter(), "top1": AverageMeter(), "top5": AverageMeter()}
    batch_time = AverageMeter()
    model.eval()
    end = time.time()
    last_idx = len(loader) - 1
    for batch_idx, (inp, target) in enumerate(loader):
        with torch.autocast(device_type=inp.device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            output = model(inp)
            loss = loss_fn(output, target)
        ks = sorted(_TOPK.values(), reverse=True)  # maxk first
        batch_metrics = dict(zip(_TOPK, accuracy(output, target, topk=ks)))  # todoruleid: family 5 (missed)
        batch_metrics["loss"] = loss
        if DIST.distributed:
            batch_metrics = {k: reduce_tensor(v.detach(), DIST.world_size) for k, v in batch_metrics.items()}
        if inp.device.type == "cuda":
            torch.cuda.synchronize()
        n = inp.size(0)
        for k, v in batch_metrics.items():
            meters[k].update(v.item(), n)
        batch_time.update(time.time() - end)
        end = time.time()
        if DIST.is_primary and (batch_idx % log_interval == 0 or batch_idx == last_idx):
            _logger.info(  # ok: MLS306
                "%sTest: [%d/%d] Time %.3f (%.3f) Loss %.4f (%.4f) Acc@1 %.3f (%.3f) Acc@5 %.3f (%.3f)",
                log_prefix, batch_idx, last_idx, batch_time.val, batch_time.avg,
                meters["loss"].val, meters["loss"].avg, meters["top1"].val, meters["top1"].avg,
                meters["top5"].val, meters["top5"].avg,
            )
    return OrderedDict((k, m.avg) for k, m in meters.items())


def _load_weights(model, path, use_ema=False):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    key = "state_dict_ema" if use_ema and "state_dict_ema" in ckpt else "state_dict"
    state = ckpt.get(key, ckpt)
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    model.load_state_dict(state)
    _logger.info("Loaded %s weights from %s", key, path)


def parse_args():
    p = argparse.ArgumentParser(description="ImageNet validation")
    p.add_argument("data_dir")
    p.add_argument("--split", default="val")
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--checkpoint", default="")
    p.add_argument("--use-ema", action="store_true")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--crop-pct", type=float, default=0.875)
    p.add_argument("-b", "--batch-size", type=int, default=256)
    p.add_argument("-j", "--workers", type=int, default=8)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--results-file", default="")
    return p.parse_args()


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args()
    init_distributed()
    model = create_model(args.model, num_classes=args.num_classes, img_size=args.img_size)
    if args.checkpoint:
        _load_weights(model, args.checkpoint, args.use_ema)
    model.to(DIST.device)

    dataset = ImageFolder(
        os.path.join(args.data_dir, args.split),
        transform=build_transform(False, args.img_size, crop_pct=args.crop_pct),
    )
    loader = create_loader(dataset, args.batch_size, is_training=False, device=DIST.device,
                           num_workers=args.workers, distributed=DIST.distributed)
    amp_dtype = torch.bfloat16 if args.amp else None
    results = evaluate(model, loader, nn.CrossEntropyLoss().to(DIST.device), amp_dtype=amp_dtype)
    results = OrderedDict(model=args.model, checkpoint=args.checkpoint, img_size=args.img_size,
                          **{k: round(v, 4) for k, v in results.items()})
    if DIST.is_primary:
        _logger.info("--result\n%s", json.dumps(results, indent=2))
        if args.results_file:
            with open(args.results_file, "w") as fh:
                json.dump(results, fh, indent=2)
    if DIST.distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
