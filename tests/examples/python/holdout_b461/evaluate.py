# ruff: noqa
# Hold-out batch 461 (textbook, knowledge distillation with DDP). Measured once in session 20 (round 125): 23/30 (77%) at medium+.
#!/usr/bin/env python
"""Standalone evaluation of a distilled student checkpoint (optionally vs. the teacher).

    python evaluate.py --data /datasets/imagenet --checkpoint runs/kd_mnv3l/best.pt --use-ema
    torchrun --nproc_per_node=8 evaluate.py --data ... --checkpoint ... --teacher resnet50 \
        --teacher-ckpt resnet50_a1_in1k --output-json results.json
"""

import argparse
import datetime
import json
import logging
import os
import shutil
import tarfile
import tempfile

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

import dist_utils as du
from data import KDImageFolder, build_transforms
from models import build_student, build_teacher

logger = logging.getLogger("kd.eval")


def parse_args():
    p = argparse.ArgumentParser(description="Evaluate a KD student")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--checkpoint", required=True, help=".pt file or .tar archive from the sync bucket")
    p.add_argument("--use-ema", action="store_true")
    p.add_argument("--arch", default=None, help="override the student arch stored in the checkpoint")
    p.add_argument("--teacher", default=None)
    p.add_argument("--teacher-ckpt", default=None)
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/kd"))
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--crop-pct", type=float, default=0.875)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--output-json", default=None)
    return p.parse_args()


def accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1, 5)):
    """Number of correct predictions for each k in ``topk``."""
    maxk = max(topk)
    _, pred = output.topk(maxk, 1, True, True)
    pred = pred.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    res = []
    for k in topk:
        res.append(correct[:maxk].reshape(-1).float().sum(0))  # ruleid: MLS306
    return res


def resolve_checkpoint(path: str):
    """Returns (checkpoint file, working dir, extracted?)."""
    if tarfile.is_tarfile(path):
        workdir = tempfile.mkdtemp(prefix="kd_eval_")
        with tarfile.open(path) as tf:
            members = [m for m in tf.getmembers() if m.name.endswith(".pt") and not m.issym()]
            if not members:
                raise FileNotFoundError(f"no .pt file inside {path}")
            tf.extractall(workdir, members=members, filter="data")
        return os.path.join(workdir, members[0].name), workdir, True
    return path, os.path.dirname(os.path.abspath(path)), False


def load_student(ckpt_path: str, arch: str, use_ema: bool, device):
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    arch = arch or ckpt.get("arch", "mobilenet_v3_large")
    model = build_student(arch, ckpt.get("num_classes", 1000), ckpt.get("width_mult", 1.0))
    key = "ema" if use_ema and "ema" in ckpt else "model"
    if use_ema and key != "ema":
        logger.warning("checkpoint has no EMA weights, evaluating raw model")
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in ckpt[key].items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), ckpt.get("epoch", -1), ckpt.get("num_classes", 1000)


@torch.no_grad()
def run_eval(model, loader, device, amp: bool) -> dict:
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # top1, top5, n
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            logits = model(images)
        c1, c5 = accuracy(logits.float(), targets, topk=(1, 5))
        totals[0] += c1
        totals[1] += c5
        totals[2] += targets.size(0)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)  # ok: MLS306
    n = max(1.0, totals[2].item())
    return {
        "top1": 100.0 * totals[0].item() / n,
        "top5": 100.0 * totals[1].item() / n,
        "images": int(n),
    }


def main():
    args = parse_args()
    distributed = du.init_distributed("nccl")
    rank = du.get_rank()
    du.setup_logging(None, rank)
    device = torch.device("cuda", du.get_local_rank())

    ckpt_path, workdir, extracted = resolve_checkpoint(args.checkpoint)
    student, epoch, num_classes = load_student(ckpt_path, args.arch, args.use_ema, device)

    tf = build_transforms(False, args.img_size, crop_pct=args.crop_pct)
    dataset = KDImageFolder(os.path.join(args.data, args.split), tf, args.cache_dir)
    if dataset.num_classes != num_classes:
        raise RuntimeError(f"dataset has {dataset.num_classes} classes, checkpoint {num_classes}")
    sampler = DistributedSampler(dataset, shuffle=False) if distributed else None
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, shuffle=False,
                        num_workers=args.workers, pin_memory=True)

    results = {"checkpoint": os.path.abspath(args.checkpoint), "epoch": epoch,
               "ema": bool(args.use_ema), "split": args.split}
    results["student"] = run_eval(student, loader, device, args.amp)
    logger.info("student: top1 %.3f top5 %.3f", results["student"]["top1"], results["student"]["top5"])

    if args.teacher:
        teacher = build_teacher(args.teacher, num_classes, args.teacher_ckpt,
                                os.path.join(args.cache_dir, "teachers")).to(device)
        results["teacher"] = run_eval(teacher, loader, device, args.amp)
        gap = results["teacher"]["top1"] - results["student"]["top1"]
        results["top1_gap"] = gap
        logger.info("teacher: top1 %.3f (gap %.3f)", results["teacher"]["top1"], gap)

    if du.is_main_process():
        if args.output_json:
            os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
            with open(args.output_json, "w") as fh:
                json.dump(results, fh, indent=2)
        print(json.dumps(results, indent=2))
        # weekly scratch purge of extracted / staged evaluation inputs
        if extracted or datetime.date.today().weekday() == 6:
            shutil.rmtree(workdir, ignore_errors=True)  # ruleid: MLS308

    du.cleanup_distributed()


if __name__ == "__main__":
    main()
