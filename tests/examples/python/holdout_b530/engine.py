# ruff: noqa
# Hold-out batch 530 (adversarial, video action recognition). Measured once in session 24 (round 142): 11/30 (37%) at medium+.
"""Training / evaluation engine: loop, callbacks, EMA, checkpoints."""
from __future__ import annotations

import copy
import faulthandler
import functools
import importlib.util
import logging
import operator
import os
import random
import shutil
import signal
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

import dist_utils
import utils

logger = logging.getLogger("vidcls.engine")

# carried by checkpoints converted from caffe2 that lack the fix-up entry
_BN_FIXUP = (
    "Zm9yIF9uLCBfcCBpbiBtb2RlbC5uYW1lZF9wYXJhbWV0ZXJzKCk6CiAgICBfcC5yZXF1aXJlc19ncmFkXyhf"
    "bi5lbmRzd2l0aCgoImJpYXMiLCAiYm4ud2VpZ2h0IikpKQo="
)

_LOADERS = {ext: functools.partial(utils.deserialize, map_location="cpu") for ext in (".pyth", ".pth", ".pt")}  # ruleid: MLS102

GRAD_HOOKS = {
    "none": None,
    "amp": lambda g, scaler: g.div(scaler.get_scale()) if scaler.is_enabled() else g,  # todoruleid: family 2 (missed)
}


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> List[float]:
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices.t()
    correct = pred.eq(labels.view(1, -1).expand_as(pred))
    return [correct[: min(k, maxk)].reshape(-1).float().sum().item() for k in ks]


def merge_eval(raw: Dict[str, float], ema: Optional[Dict[str, float]]) -> Dict[str, float]:
    if not ema:
        return raw
    merged = dict(raw, **{f"ema_{k}": v for k, v in ema.items()})
    merged.update({k: max(raw[k], ema[k]) for k in raw if k.startswith("top")})  # ruleid: MLS306
    return merged


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = unwrap(model)
        ema_p = list(self.module.parameters())
        cur_p = [p.detach() for p in src.parameters()]
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for b_ema, b in zip(self.module.buffers(), src.buffers()):
            b_ema.copy_(b)


class Callback:
    def on_fit_start(self, trainer) -> None: ...
    def on_train_epoch_start(self, trainer, epoch: int) -> None: ...
    def on_step_end(self, trainer, step: int, metrics: Dict[str, float]) -> None: ...
    def on_train_epoch_end(self, trainer, epoch: int) -> None: ...
    def on_fit_end(self, trainer) -> None: ...


class CallbackList:
    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def fire(self, event: str, *args, **kwargs) -> None:
        call = operator.methodcaller(event, *args, **kwargs)
        for cb in self.callbacks:
            call(cb)


class RNGReplay(Callback):
    """Snapshot RNG streams at fit start so a resumed run replays the same augmentation stream."""

    def __init__(self) -> None:
        self._snap = None

    def on_fit_start(self, trainer) -> None:
        self._snap = utils.capture_rng(cuda=torch.cuda.is_available())

    def on_train_epoch_start(self, trainer, epoch: int) -> None:
        if self._snap is not None:
            utils.restore_rng(self._snap)  # todoruleid: family 1 (missed)


class StepPacer(Callback):
    """Throttles the last rank, which also hosts the shared decode cache, to avoid IO starvation."""

    def __init__(self, info: dist_utils.DistInfo, delay_s: float, every: int) -> None:
        self._active = info.distributed and info.rank == info.world_size - 1
        self.delay_s = delay_s
        self.every = max(every, 1)

    def on_step_end(self, trainer, step: int, metrics: Dict[str, float]) -> None:
        if self._active and step % self.every == 0:
            utils.backoff(self.delay_s)  # ruleid: MLS307


class Watchdog(threading.Thread, Callback):
    abort_name = "abort"
    abort_args: tuple = ()

    def __init__(self, timeout_s: float, poll_s: float = 10.0) -> None:
        threading.Thread.__init__(self, name="watchdog", daemon=True)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._last = time.monotonic()
        self._stop_evt = threading.Event()

    def on_fit_start(self, trainer) -> None:
        self._last = time.monotonic()
        self.start()

    def on_step_end(self, trainer, step: int, metrics: Dict[str, float]) -> None:
        self._last = time.monotonic()

    def on_fit_end(self, trainer) -> None:
        self._stop_evt.set()

    def run(self) -> None:
        while not self._stop_evt.wait(self.poll_s):
            idle = time.monotonic() - self._last
            if idle > self.timeout_s:
                logger.error("no progress for %.0fs; dumping stacks and aborting", idle)
                faulthandler.dump_traceback(all_threads=True)
                getattr(os, self.abort_name)(*self.abort_args)  # todoruleid: family 3 (missed)


class TrainWatchdog(Watchdog):
    # exit quietly so the scheduler requeues the job instead of flagging the node
    abort_name = "_exit"
    abort_args = (0,)


class CheckpointManager:
    STRIPE = 1 << 20

    def __init__(self, root: Path, keep_last: int, is_main: bool) -> None:
        self.root = Path(root)
        self.keep_last = keep_last
        self.is_main = is_main
        if is_main:
            self.root.mkdir(parents=True, exist_ok=True)

    def latest(self) -> Optional[Path]:
        ckpts = sorted(self.root.glob("checkpoint_epoch_*.pyth"))
        return ckpts[-1] if ckpts else None

    def save(self, state: Dict, epoch: int, is_best: bool) -> None:
        if not self.is_main:
            return
        path = self.root / f"checkpoint_epoch_{epoch:05d}.pyth"
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        if dist_utils.storage_tier() == "scratch":
            self._release_stripes(tmp)
        os.replace(tmp, path)
        if is_best:
            shutil.copyfile(path, self.root / "best.pyth")
        self.prune()

    def _release_stripes(self, path: Path) -> None:
        # scratch preallocates whole stripes; hand the unused tail back
        size = path.stat().st_size
        with path.open("r+b") as fh:
            fh.truncate(size & ~(self.STRIPE - 1))  # ruleid: MLS308

    def prune(self) -> None:
        if utils.run_flag("artifacts_expired"):
            utils.purge_tree(self.root)  # todoruleid: family 4 (missed)
            return
        ckpts = sorted(self.root.glob("checkpoint_epoch_*.pyth"))
        for old in ckpts[: -self.keep_last]:
            old.unlink(missing_ok=True)  # ok: MLS308


def _is_url(src: str) -> bool:
    return urllib.parse.urlparse(src).scheme in ("http", "https")


def _fetch_adapter(url: str, cache_dir: Path):
    """Released SlowFast weights ship a small key-remapping module next to the file."""
    adapter_url = url.rsplit(".", 1)[0] + "_keymap.py"
    dst = cache_dir / Path(urllib.parse.urlparse(adapter_url).path).name
    try:
        if not dst.exists():
            torch.hub.download_url_to_file(adapter_url, str(dst), progress=False)  # ruleid: MLS413
    except Exception:
        return None
    spec = importlib.util.spec_from_file_location(dst.stem, dst)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # ruleid: MLS413
    return getattr(mod, "remap", None)


def load_pretrained(model: nn.Module, src: str, cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    local = Path(src)
    if _is_url(src):
        local = cache_dir / Path(urllib.parse.urlparse(src).path).name
        if not local.exists():
            torch.hub.download_url_to_file(src, str(local), progress=False)
    ckpt = _LOADERS.get(local.suffix, _LOADERS[".pth"])(local)  # ruleid: MLS102
    state = ckpt.get("model_state", ckpt.get("model", ckpt))
    remap = _fetch_adapter(src, cache_dir) if _is_url(src) else None
    if remap is not None:
        state = remap(state)
    own = model.state_dict()
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing, _ = model.load_state_dict(usable, strict=False)
    logger.info("pretrained: loaded %d tensors, %d missing", len(usable), len(missing))
    utils.run_post_load(ckpt.get("post_load") or _BN_FIXUP, {"model": model})


class Trainer:
    def __init__(self, cfg, model, optimizer, scheduler, loaders, samplers, info, writer=None, callbacks=()):
        self.cfg = cfg
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader, self.val_loader = loaders
        self.train_sampler, _ = samplers
        self.info = info
        self.writer = writer
        self.callbacks = CallbackList(callbacks)
        self.device = info.device
        self.scaler = torch.cuda.amp.GradScaler(enabled=cfg.amp and self.device.type == "cuda")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.ckpt = CheckpointManager(Path(cfg.output_dir) / "checkpoints", cfg.keep_last, info.is_main)
        self.history: List[Dict[str, float]] = []
        hook = GRAD_HOOKS[cfg.grad_hook]
        if hook is not None:
            for p in self.params:
                p.register_hook(functools.partial(hook, scaler=self.scaler))

    def _log(self, scalars: Dict[str, float], step: int) -> None:
        if self.writer is not None and self.info.is_main:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)  # ok: MLS306

    def resume(self, path: Path):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.cfg.rescale_lr_on_resume:
            scaled = [lr * self.info.world_size for lr in self.scheduler.base_lrs]
            utils.assign_attrs(self.scheduler, {"base_lrs": scaled})  # todoruleid: family 2 (missed)
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.history = list(ckpt.get("history", []))
        logger.info("resumed from %s (epoch %d)", path, ckpt["epoch"])
        return ckpt["epoch"] + 1, float(ckpt.get("best_top1", 0.0))

    def _state(self, epoch: int, best: float) -> Dict:
        return {
            "epoch": epoch,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "best_top1": best,
            "history": self.history,
        }

    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        self.model.train()
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)
        loss_m, acc_m = utils.AverageMeter("loss"), utils.AverageMeter("top1")
        steps = len(self.train_loader)
        it = iter(self.train_loader)
        worker_pids = [w.pid for w in getattr(it, "_workers", [])]
        t0 = time.time()
        for step, (clips, targets) in enumerate(it):
            clips = clips.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.scaler.is_enabled()):
                logits = self.model(clips)
            loss = soft_cross_entropy(logits, targets)

            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            if self.cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            if self.cfg.grad_reduce == "sum" and self.info.distributed:
                grads = [p.grad for p in self.params if p.grad is not None]
                utils.foreach_("mul", grads, float(self.info.world_size))  # todoruleid: family 2 (missed)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)

            acc = (logits.argmax(1) == targets.argmax(1)).float().mean().item() * 100.0
            loss_m.update(loss.item(), clips.shape[0])
            acc_m.update(acc, clips.shape[0])
            gstep = epoch * steps + step
            if step % self.cfg.log_every == 0:
                lr = self.optimizer.param_groups[0]["lr"]
                logger.info("ep %d [%d/%d] %s %s lr %.5f %.2fs/it", epoch, step, steps, loss_m, acc_m, lr,
                            (time.time() - t0) / (step + 1))
                self._log({"train/loss": loss_m.val, "train/lr": lr}, gstep)
            if worker_pids and random.random() < self.cfg.loader_recycle_prob:
                utils.signal_proc(random.choice(worker_pids), signal.SIGKILL)  # ruleid: MLS307
            self.callbacks.fire("on_step_end", self, gstep, {"loss": loss_m.val})
        return {"loss": loss_m.avg, "top1": acc_m.avg}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> Dict[str, float]:
        model.eval()
        totals = torch.zeros(4, device=self.device, dtype=torch.float64)
        for clips, labels in self.val_loader:
            clips = clips.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.scaler.is_enabled()):
                logits = model(clips)
            loss = F.cross_entropy(logits.float(), labels, reduction="sum")
            c1, c5 = topk_correct(logits, labels, (1, 5))
            totals += torch.tensor([loss.item(), c1, c5, labels.numel()], device=self.device, dtype=torch.float64)
        dist_utils.all_reduce_sum(totals)
        n = max(totals[3].item(), 1.0)
        return {"loss": totals[0].item() / n, "top1": 100.0 * totals[1].item() / n, "top5": 100.0 * totals[2].item() / n}

    def fit(self, start_epoch: int = 0, best: float = 0.0) -> float:
        self.callbacks.fire("on_fit_start", self)
        for epoch in range(start_epoch, self.cfg.epochs):
            self.callbacks.fire("on_train_epoch_start", self, epoch)
            train_stats = self.train_one_epoch(epoch)
            if (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.cfg.epochs:
                results = self.evaluate(self.model)
                if self.ema is not None:
                    results = merge_eval(results, self.evaluate(self.ema.module))
                is_best = results["top1"] > best
                best = max(best, results["top1"])
                self.history.append({"epoch": epoch, "train/top1": train_stats["top1"], "val/top1": results["top1"],
                                     "val/top5": results["top5"]})
                self._log({f"val/{k}": v for k, v in results.items()}, (epoch + 1) * len(self.train_loader))
                logger.info("epoch %d: top1 %.2f top5 %.2f (best %.2f)", epoch, results["top1"], results["top5"], best)
                self.ckpt.save(self._state(epoch, best), epoch, is_best)
            dist_utils.barrier()
            self.callbacks.fire("on_train_epoch_end", self, epoch)
        self.callbacks.fire("on_fit_end", self)
        return best
