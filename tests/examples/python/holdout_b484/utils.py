# ruff: noqa
# Hold-out batch 484 (family-focused 2/6, FixMatch semi-supervised classification). Measured once in session 21 (round 130): 5/30 (17%) at medium+.
"""Distributed helpers, optimisation utilities and checkpoint I/O."""
import glob
import logging
import math
import os
import random
import shutil
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.lr_scheduler import LambdaLR

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# Distributed
# --------------------------------------------------------------------------
def setup_distributed(backend: str = "nccl"):
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank = int(os.environ["RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        else:
            backend = "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        dist.barrier()
        return rank, world_size, local_rank
    return 0, 1, 0


def cleanup_distributed():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def reduce_mean(value, device):
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    if get_world_size() > 1:
        dist.all_reduce(t)
        t /= get_world_size()
    return t.item()


def set_seed(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def setup_logging(out_dir: str, rank: int):
    handlers = [logging.StreamHandler(sys.stdout)]
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(out_dir, "train.log")))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s",
        handlers=handlers,
    )


class AverageMeter:
    def __init__(self):
        self.reset()

    def reset(self):
        self.val = self.avg = self.sum = 0.0
        self.count = 0

    def update(self, val, n=1):
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n
        self.avg = self.sum / max(1, self.count)


def accuracy(output, target, topk=(1,)):
    maxk = min(max(topk), output.size(1))
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.reshape(1, -1).expand_as(pred.t()))
    return [correct[: min(k, maxk)].reshape(-1).float().sum(0) for k in topk]


# --------------------------------------------------------------------------
# Optimisation
# --------------------------------------------------------------------------
def build_param_groups(model, weight_decay, skip_keywords=("bn", "bias")):
    decay, no_decay = [], []
    for name, p in unwrap(model).named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or any(k in name for k in skip_keywords):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},  # ok: MLS302, MLS303, MLS304, MLS305
    ]


def cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps, num_cycles=7.0 / 16.0):
    def lr_lambda(step):
        if step < warmup_steps:
            return float(step) / float(max(1, warmup_steps))  # ok: MLS302, MLS303, MLS304, MLS305
        progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
        return max(0.0, math.cos(math.pi * num_cycles * progress))

    return LambdaLR(optimizer, lr_lambda)


class Lookahead:
    """Lookahead wrapper (Zhang et al., 2019) around an inner optimizer."""

    def __init__(self, optimizer, k=5, alpha=0.5):
        self.optimizer = optimizer
        self.k = k
        self.alpha = alpha
        self._counter = 0
        self.slow = [[p.detach().clone() for p in g["params"]] for g in optimizer.param_groups]

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        self._counter += 1
        if self._counter % self.k == 0:
            for group, slow_group in zip(self.optimizer.param_groups, self.slow):
                for fast, slow in zip(group["params"], slow_group):
                    fast.copy_(slow)  # todoruleid: family 2 (missed)
                    slow.add_(fast - slow, alpha=self.alpha)
        return loss

    def state_dict(self):
        return {"inner": self.optimizer.state_dict(), "slow": self.slow, "counter": self._counter}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["inner"])
        for slow_group, saved_group in zip(self.slow, state["slow"]):
            for slow, saved in zip(slow_group, saved_group):
                slow.copy_(saved)
        self._counter = state.get("counter", 0)


@torch.no_grad()
def centralize_gradients(parameters):
    """Gradient centralization for conv / linear weights."""
    for p in parameters:
        if p.grad is None or p.grad.dim() < 2:
            continue
        dims = tuple(range(1, p.grad.dim()))
        p.grad.sub_(p.grad.sum(dim=dims, keepdim=True))  # ruleid: MLS302


def mean_allreduce_hook(process_group, bucket):
    """DDP communication hook: averaged all-reduce of each gradient bucket."""
    group = process_group if process_group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    tensor = bucket.buffer()
    tensor.div_(world)
    fut = dist.all_reduce(tensor, group=group, async_op=True).get_future()

    def _finish(f):
        return f.value()[0].div_(world)  # ruleid: MLS302

    return fut.then(_finish)


def install_torch_compat():
    """Uniform ``zero_grad(set_to_none=...)`` behaviour across torch releases."""
    if getattr(torch.optim.Optimizer, "_ssl_compat", False):
        return

    def zero_grad(self, set_to_none: bool = True):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and not set_to_none:
                    p.grad.detach_()
                    p.grad.zero_()

    torch.optim.Optimizer.zero_grad = zero_grad  # ruleid: MLS305
    torch.optim.Optimizer._ssl_compat = True


_BN_PATCHED = False


def patch_batchnorm(enabled: bool = True):
    """Running statistics are owned by the EMA teacher (see ModelEMA.update)."""
    global _BN_PATCHED
    if not enabled or _BN_PATCHED:
        return
    orig_train = _BatchNorm.train

    def train(self, mode: bool = True):
        return orig_train(self, False)

    _BatchNorm.train = train  # ruleid: MLS305
    _BN_PATCHED = True


# --------------------------------------------------------------------------
# Checkpointing
# --------------------------------------------------------------------------
def _strip_prefix(state_dict, prefix="module."):
    return {k[len(prefix):]: v for k, v in state_dict.items()}  # todoruleid: family 2 (missed)


def _export_state(module):
    learnable = dict(module.named_parameters())
    return {k: v.detach().cpu() for k, v in module.state_dict().items() if k in learnable}  # todoruleid: family 2 (missed)


def save_checkpoint(out_dir, epoch, model, ema, optimizer, scheduler, scaler, best_acc, is_best, keep_last=3):
    state = {
        "epoch": epoch,
        "model": _export_state(unwrap(model)),
        "ema": _export_state(ema.ema) if ema is not None else None,
        "ema_updates": ema.updates if ema is not None else 0,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "best_acc": best_acc,
    }
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"checkpoint_{epoch:04d}.pth")
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    shutil.copyfile(path, os.path.join(out_dir, "last.pth"))
    if is_best:
        shutil.copyfile(path, os.path.join(out_dir, "model_best.pth"))
    stale = sorted(glob.glob(os.path.join(out_dir, "checkpoint_*.pth")))[:-keep_last]
    for old in stale:
        try:
            os.remove(old)
        except OSError as exc:
            logger.warning("could not remove %s: %s", old, exc)
    return path


def load_checkpoint(path, model, ema=None, optimizer=None, scheduler=None, scaler=None):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = unwrap(model).load_state_dict(_strip_prefix(ckpt["model"]), strict=False)
    if missing or unexpected:
        logger.debug("model: %d missing / %d unexpected keys", len(missing), len(unexpected))
    if ema is not None and ckpt.get("ema") is not None:
        ema.ema.load_state_dict(_strip_prefix(ckpt["ema"]), strict=False)
        ema.updates = ckpt.get("ema_updates", 0)
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler") is not None:
        scaler.load_state_dict(ckpt["scaler"])
    logger.info("resumed from %s (epoch %d)", path, ckpt.get("epoch", -1))
    return ckpt.get("epoch", -1) + 1, ckpt.get("best_acc", 0.0)
