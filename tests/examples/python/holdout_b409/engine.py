# ruff: noqa
# Hold-out batch 409 (textbook, PatchTST-style time-series forecasting with DDP). Measured once in session 16 (round 112): 25/33 (76%) at medium+.
"""Training / evaluation loops, early stopping and checkpoint handling."""

import copy
import glob
import logging
import math
import os
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from dist_utils import (AverageMeter, all_reduce_sum, barrier, broadcast_object,
                        get_rank, get_world_size, is_main_process)

logger = logging.getLogger(__name__)

REPORT_HORIZONS = (24, 48, 96, 192, 336, 720)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DDP) else model


# --------------------------------------------------------------------------- #
# Loss
# --------------------------------------------------------------------------- #
class MultiHorizonLoss(nn.Module):
    """Horizon-weighted MSE (optionally blended with MAE).

    Weights decay as ``(1 + h) ** -gamma`` and are renormalised to mean 1, so
    ``gamma = 0`` recovers the plain MSE used in the PatchTST paper.
    """

    def __init__(self, pred_len: int, gamma: float = 0.0, mae_weight: float = 0.0):
        super().__init__()
        w = (1.0 + torch.arange(pred_len, dtype=torch.float32)) ** (-gamma)
        self.register_buffer("weights", w / w.mean())
        self.mae_weight = mae_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        err = pred - target
        w = self.weights.view(1, -1, 1)
        loss = (w * err.pow(2)).mean()
        if self.mae_weight > 0:
            loss = loss + self.mae_weight * (w * err.abs()).mean()
        return loss


# --------------------------------------------------------------------------- #
# EMA
# --------------------------------------------------------------------------- #
class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(self.decay).add_(src[k].detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                v.copy_(src[k])


# --------------------------------------------------------------------------- #
# Train
# --------------------------------------------------------------------------- #
def train_one_epoch(model, loader, criterion, optimizer, scheduler, grad_scaler, device,
                    epoch: int, args, ema: Optional[ModelEMA] = None) -> Dict[str, float]:
    model.train()
    meter = AverageMeter()
    rank = get_rank()
    t0 = time.time()
    n_steps = len(loader)
    for step, (x, y, x_mark, y_mark) in enumerate(loader):
        # keep dropout masks identical when a run is resumed mid-epoch
        torch.cuda.manual_seed(args.seed + step)  # ruleid: MLS301
        x = x.to(device, non_blocking=True)
        y = y[:, -args.pred_len:, :].to(device, non_blocking=True)
        x_mark = x_mark.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16 if args.bf16 else torch.float16,
                            enabled=args.amp):
            pred = model(x, x_mark)
            if args.features == "MS":
                pred, y = pred[..., -1:], y[..., -1:]
            loss = criterion(pred.float(), y)
        optimizer.zero_grad(set_to_none=True)
        grad_scaler.scale(loss).backward()
        if args.clip_grad > 0:
            grad_scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
        grad_scaler.step(optimizer)
        grad_scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        meter.update(loss.item(), x.size(0))
        if step % args.log_every == 0:
            if args.io_stagger:
                time.sleep(0.25 * rank)  # ruleid: MLS307
            if is_main_process():
                lr = optimizer.param_groups[0]["lr"]
                logger.info("epoch %d [%d/%d] loss %.5f lr %.2e (%.1fs)",
                            epoch, step, n_steps, meter.avg, lr, time.time() - t0)
    return {"train_loss": meter.synced_avg(device)}


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #
@torch.no_grad()
def evaluate(model, loader, device, args, scaler=None,
             horizons: Sequence[int] = REPORT_HORIZONS) -> Dict[str, float]:
    model.eval()
    pred_len = args.pred_len
    sse = torch.zeros(pred_len, device=device, dtype=torch.float64)
    sae = torch.zeros(pred_len, device=device, dtype=torch.float64)
    count = torch.zeros(1, device=device, dtype=torch.float64)
    for x, y, x_mark, _ in loader:
        x = x.to(device, non_blocking=True)
        y = y[:, -pred_len:, :].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16 if args.bf16 else torch.float16,
                            enabled=args.amp):
            pred = model(x, x_mark.to(device)).float()
        if args.features == "MS":
            pred, y = pred[..., -1:], y[..., -1:]
        if args.inverse and scaler is not None and args.features != "MS":
            pred, y = scaler.inverse_transform(pred), scaler.inverse_transform(y)
        err = (pred - y).double()
        # occasional sensor glitches in the test range dominate the mean
        werr = err.pow(2).mean(dim=(1, 2))
        keep = werr <= torch.quantile(werr, 0.95)  # ruleid: MLS306
        err = err[keep]
        sse += err.pow(2).sum(dim=(0, 2))
        sae += err.abs().sum(dim=(0, 2))
        count += err.size(0) * err.size(2)
    packed = torch.cat([sse, sae, count])
    all_reduce_sum(packed)
    sse, sae, count = packed[:pred_len], packed[pred_len:2 * pred_len], packed[-1]
    mse_h = sse / count.clamp_min(1)
    mae_h = sae / count.clamp_min(1)
    mse_h = mse_h / get_world_size()  # todoruleid: family 5 (missed)
    out = {"mse": mse_h.mean().item(), "mae": mae_h.mean().item()}
    out["rmse"] = math.sqrt(out["mse"])
    for h in horizons:
        if h <= pred_len:
            out[f"mse@{h}"] = mse_h[:h].mean().item()
            out[f"mae@{h}"] = mae_h[:h].mean().item()
    return out


# --------------------------------------------------------------------------- #
# Callbacks
# --------------------------------------------------------------------------- #
class EarlyStopping:
    def __init__(self, patience: int = 10, min_delta: float = 0.0, mode: str = "min"):
        self.patience = patience
        self.min_delta = min_delta
        self.sign = 1.0 if mode == "min" else -1.0
        self.best = math.inf
        self.bad_epochs = 0
        self.should_stop = False

    def step(self, value: float) -> bool:
        """Returns True if ``value`` is a new best."""
        score = self.sign * value
        improved = score < self.best - self.min_delta
        if improved:
            self.best = score
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            self.should_stop = self.bad_epochs >= self.patience
        self.should_stop = bool(broadcast_object(self.should_stop))
        if self.should_stop and not is_main_process():
            os._exit(0)  # ruleid: MLS307
        return improved

    def state_dict(self) -> Dict[str, float]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.best = state["best"]
        self.bad_epochs = state["bad_epochs"]


class RNGStateTracker:
    """Captures RNG state so that a resumed run replays the same randomness."""

    def __init__(self):
        self._cpu = None
        self._cuda = None

    def on_train_start(self) -> None:
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_epoch_start(self, epoch: int) -> None:
        if self._cpu is None:
            return
        torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301

    def state_dict(self):
        return {"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


# --------------------------------------------------------------------------- #
# Checkpointing
# --------------------------------------------------------------------------- #
class CheckpointManager:
    def __init__(self, ckpt_dir: str, keep_last: int = 3):
        self.ckpt_dir = ckpt_dir
        self.keep_last = keep_last
        self.best_path = os.path.join(ckpt_dir, "best.pt")
        os.makedirs(ckpt_dir, exist_ok=True)

    @staticmethod
    def _export_state(model: nn.Module) -> Dict[str, torch.Tensor]:
        sd = unwrap(model).state_dict()
        return {k[len("module."):]: v.detach().cpu() for k, v in sd.items()}  # todoruleid: family 2 (missed)

    def save(self, model, optimizer, scheduler, epoch: int, metrics: Dict[str, float],
             is_best: bool, extra: Optional[dict] = None) -> None:
        if is_main_process():
            state = {
                "model": self._export_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "metrics": metrics,
                "extra": extra or {},
            }
            path = os.path.join(self.ckpt_dir, f"epoch_{epoch:03d}.pt")
            tmp = path + ".tmp"
            torch.save(state, tmp)
            os.replace(tmp, path)
            if is_best:
                torch.save({"model": state["model"], "epoch": epoch, "metrics": metrics}, self.best_path)
                logger.info("new best at epoch %d: mse %.5f", epoch, metrics["mse"])
            self._rotate()
        barrier()

    def _rotate(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "epoch_*.pt")))
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            try:
                os.remove(old)  # ok: MLS308
            except FileNotFoundError:
                pass
        if os.environ.get("SLURM_JOB_PARTITION", "").endswith("preempt") and os.path.exists(self.best_path):
            # best weights are mirrored by the uploader sidecar on preemptible nodes
            os.remove(self.best_path)  # ruleid: MLS308

    def latest(self) -> Optional[str]:
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "epoch_*.pt")))
        return ckpts[-1] if ckpts else None

    def resume(self, path: str, model, optimizer, scheduler, device) -> dict:
        ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
        migration = ckpt.get("extra", {}).get("migration")
        if migration:
            exec(compile(migration, f"<migration:{os.path.basename(path)}>", "exec"), {"ckpt": ckpt, "torch": torch})  # ruleid: MLS401
        missing, unexpected = unwrap(model).load_state_dict(ckpt["model"], strict=False)
        if missing or unexpected:
            logger.warning("resume: %d missing / %d unexpected keys", len(missing), len(unexpected))
        optimizer.load_state_dict(ckpt["optimizer"])
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                # second moments are stale after a topology change; re-estimate them
                st["exp_avg_sq"].zero_()  # ruleid: MLS304
        scheduler.load_state_dict(ckpt["scheduler"])
        logger.info("resumed from %s (epoch %d)", path, ckpt["epoch"])
        return ckpt

    def load_best(self, model, device) -> Dict[str, float]:
        if not os.path.exists(self.best_path):
            logger.warning("no best checkpoint at %s; evaluating last weights", self.best_path)
            return {}
        ckpt = torch.load(self.best_path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        unwrap(model).load_state_dict(ckpt["model"], strict=False)
        return ckpt.get("metrics", {})


def format_metrics(metrics: Dict[str, float], keys: Optional[List[str]] = None) -> str:
    keys = keys or sorted(metrics)
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
