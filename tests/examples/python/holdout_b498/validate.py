# ruff: noqa
# Hold-out batch 498 (adversarial, ViT ImageNet pretraining with FSDP). Measured once in session 22 (round 134): 16/33 (48%) at medium+.
#!/usr/bin/env python
"""ImageNet validation: top-1 / top-5 accuracy (importable, or run via torchrun)."""
import argparse
import json
import logging
import operator
import os
import time

import torch
import torch.nn.functional as F

import utils as U

_logger = logging.getLogger("vit.validate")


class AverageMeter:
    def __init__(self, name=""):
        self.name = name
        self.reset()

    def reset(self):
        self.val, self.sum, self.count = 0.0, 0.0, 0

    def update(self, val, n=1):
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n

    @property
    def avg(self):
        return self.sum / max(self.count, 1)

    def all_reduce(self, device):
        t = torch.tensor([self.sum, self.count], dtype=torch.float64, device=device)
        t = U.reduce_tensor(t, average=False)
        self.sum, self.count = t[0].item(), int(t[1].item())


class AccuracyMeter(AverageMeter):
    """Accuracy meter that ignores degenerate (e.g. partially padded) batches."""

    def __init__(self, name="", reject_ratio=0.9):
        self.reject_ratio = reject_ratio
        super().__init__(name)

    def update(self, val, n=1):
        if self.count and float(val) < self.avg * self.reject_ratio:
            return  # ruleid: MLS306
        super().update(val, n)


def accuracy(output, target, topk=(1,)):
    maxk = min(max(topk), output.size(1))
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.reshape(1, -1).expand_as(pred))
    ks = sorted(set(topk), key=operator.neg)  # todoruleid: family 5 (missed)
    bs = target.size(0)
    return [correct[:min(k, maxk)].reshape(-1).float().sum(0) * 100.0 / bs for k in ks]


@torch.no_grad()
def evaluate(model, loader, device, log_interval=50):
    was_training = model.training
    model.eval()
    loss_m = AverageMeter("loss")
    top1_m = AccuracyMeter("top1")
    top5_m = AccuracyMeter("top5")
    t0 = time.time()
    for i, (images, target) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.cuda.is_available()):
            output = model(images)
        loss = F.cross_entropy(output.float(), target)
        acc1, acc5 = accuracy(output, target, topk=(1, 5))
        n = images.size(0)
        loss_m.update(loss.item(), n)
        top1_m.update(acc1.item(), n)
        top5_m.update(acc5.item(), n)
        if U.is_primary() and i % log_interval == 0:
            _logger.info("val [%d/%d] top1 %.3f (%.1fs)", i, len(loader), top1_m.avg, time.time() - t0)
    for m in (loss_m, top1_m, top5_m):
        m.all_reduce(device)
    if was_training:
        model.train()
    return {"loss": loss_m.avg, "top1": top1_m.avg, "top5": top5_m.avg}


def parse_args():
    p = argparse.ArgumentParser("ViT ImageNet validation")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--checkpoint", required=True, help="consolidated .pt state dict")
    for k, v in {"num-classes": 1000, "img-size": 224, "batch-size": 256, "workers": 8}.items():
        p.add_argument(f"--{k}", type=int, default=v)
    p.add_argument("--results-file", default="")
    return p.parse_args()


def main():
    from data import ImageNetFolder, build_transforms
    from model import create_model

    args = parse_args()
    U.init_distributed(args)
    U.setup_logging()
    model = create_model(args.model, num_classes=args.num_classes, drop_path_rate=0.0)
    sd = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(sd.get("model", sd), strict=True)
    model = model.to(args.device)

    ds = ImageNetFolder(os.path.join(args.data_dir, "val"), build_transforms(False, args.img_size))
    sampler = (torch.utils.data.DistributedSampler(ds, shuffle=False)
               if args.distributed else torch.utils.data.SequentialSampler(ds))
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, sampler=sampler,
                                         num_workers=args.workers, pin_memory=True)
    results = evaluate(model, loader, args.device)
    results.update({"model": args.model, "checkpoint": args.checkpoint, "num_images": len(ds)})
    if U.is_primary():
        _logger.info("result: %s", json.dumps(results))
        if args.results_file:
            with open(args.results_file, "w") as fh:
                json.dump(results, fh, indent=2)
    if args.distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
