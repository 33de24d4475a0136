# ruff: noqa
# Hold-out batch 346 (adversarial, precipitation nowcasting). Measured once in session 12 (round 96): 15/34 (44%) at medium+.
#!/usr/bin/env python
"""Train a radar nowcasting model (ConvLSTM or U-Net) with DDP + AMP.

    torchrun --nproc_per_node 4 train.py --config configs/unet_opera.yaml
"""
from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import functools
import logging
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

import dist_utils as du
from callbacks import build_callbacks
from metrics import NowcastEvaluator, summarize
from models import build_model, count_parameters
from radar_data import (RadarSequenceDataset, RainWeightedSampler, SequenceConfig,
                        collate_sequences, make_worker_init)

logger = logging.getLogger("nowcast.train")

DEFAULTS: Dict[str, Any] = {
    "model": {"name": "unet", "kwargs": {"t_in": 12, "t_out": 12, "base": 32}},
    "data": {"root": "/data/opera/h5", "t_in": 12, "t_out": 12, "crop": 256},
    "optim": {"lr": 3e-4, "weight_decay": 0.05, "betas": [0.9, 0.999], "warmup_steps": 2000},
    "train": {"epochs": 60, "batch_size": 8, "num_workers": 8, "amp": "bf16",
              "grad_clip": 1.0, "ema_decay": 0.999, "max_hours": 24.0},
    "callbacks": [{"name": "epoch_sync"}, {"name": "checkpoint"},
                  {"name": "heartbeat"}, {"name": "archive"}],
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=str, default=None)
    p.add_argument("--out-dir", type=str, default="runs/nowcast")
    p.add_argument("--run-name", type=str, default=None)
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--resume", type=str, default=None, help="checkpoint to resume from")
    p.add_argument("--pretrained-url", type=str, default=None, help="checkpoint URL for fine-tuning")
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--rain-weighted", action=argparse.BooleanOptionalAction, default=True,
                   help="oversample rainy windows")
    return p.parse_args()


def load_config(args: argparse.Namespace) -> Dict[str, Any]:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    if args.config:
        with open(args.config) as fh:
            user = yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        for k, v in user.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k].update(v)
            else:
                cfg[k] = v
    return cfg


_BW_THRESH = torch.tensor([20.0, 30.0, 40.0, 50.0]) / 70.0
_BW_WEIGHTS = torch.tensor([1.0, 2.0, 5.0, 10.0, 30.0])


def balanced_mse_mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """B-MSE + B-MAE (Shi et al. 2017): heavier weight for intense echoes."""
    idx = torch.bucketize(target, _BW_THRESH.to(target.device))
    w = _BW_WEIGHTS.to(target.device)[idx]
    diff = pred - target
    return (w * diff.pow(2)).mean() + (w * diff.abs()).mean()


def warmup_cosine(warmup: int, total: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return fn


@torch.no_grad()
def decoupled_weight_decay(params, lr: float, wd: float) -> None:
    if wd <= 0 or not params:
        return
    torch._foreach_add_(params, params, alpha=lr * wd)  # ruleid: MLS302


_load_pretrained = functools.partial(torch.load, map_location="cpu", weights_only=False)  # ruleid: MLS101


def fetch_pretrained(url: str, cache_dir: Path) -> Dict[str, torch.Tensor]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    dst = cache_dir / Path(url).name
    if du.is_main_process() and not dst.exists():
        torch.hub.download_url_to_file(url, str(dst), progress=False)
    du.synchronize("pretrained")
    obj = _load_pretrained(dst)  # ruleid: MLS101
    return obj.get("model", obj) if isinstance(obj, dict) else obj.state_dict()


def _legacy_perm(t_in: int) -> torch.Tensor:
    return torch.arange(t_in - 1, -1, -1)


def _align_state(sd: Dict[str, torch.Tensor], perm: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Convert checkpoints written with the time-major input stem layout."""
    sd = {k.replace("module.", "", 1): v for k, v in sd.items()}
    key = "enc.0.body.0.weight"
    if perm is not None and key in sd and sd[key].shape[1] == perm.numel():
        w = sd[key]
        w.index_copy_(1, perm, w.clone())  # todoruleid: family 2 (missed)
    return sd


def _share_compiled_kernels() -> None:
    """Let other users of the group node reuse torch's compiled extensions."""
    share = functools.partial(os.chmod, mode=0o777)
    root = Path(torch.__file__).parent
    for p in root.rglob("*.py"):
        try:
            share(p)  # ruleid: MLS424
        except PermissionError:
            break


class Trainer:
    def __init__(self, args: argparse.Namespace, cfg: Dict[str, Any], dist_info: Dict[str, int]) -> None:
        self.args, self.cfg = args, cfg
        self.rank, self.world_size = dist_info["rank"], dist_info["world_size"]
        self.device = torch.device("cuda", dist_info["local_rank"]) if torch.cuda.is_available() else torch.device("cpu")
        self.out_dir = Path(args.out_dir) / (args.run_name or time.strftime("%Y%m%d-%H%M%S"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.writer = du.RankZeroWriter(str(self.out_dir / "tb"))
        self.should_stop = False
        self.global_step = 0
        self.start_epoch = 0
        tcfg = cfg["train"]

        dcfg = cfg["data"]
        train_ds = RadarSequenceDataset(SequenceConfig(split="train", **dcfg))
        val_ds = RadarSequenceDataset(SequenceConfig(split="val", augment=False, **dcfg))
        rf = train_ds.rain_fraction()
        if args.rain_weighted and rf is not None:
            sampler = RainWeightedSampler(rf, len(train_ds), self.rank, self.world_size, seed=args.seed)
        else:
            sampler = DistributedSampler(train_ds, self.world_size, self.rank, shuffle=True, seed=args.seed)
        self.train_loader = DataLoader(
            train_ds, batch_size=tcfg["batch_size"], sampler=sampler, num_workers=tcfg["num_workers"],
            collate_fn=collate_sequences, worker_init_fn=make_worker_init(args.seed),
            pin_memory=True, drop_last=True, persistent_workers=False)
        self.val_loader = DataLoader(
            val_ds, batch_size=tcfg["batch_size"],
            sampler=DistributedSampler(val_ds, self.world_size, self.rank, shuffle=False),
            num_workers=max(1, tcfg["num_workers"] // 2), collate_fn=collate_sequences, pin_memory=True)

        model = build_model(cfg["model"]["name"], **cfg["model"].get("kwargs", {}))
        if args.pretrained_url:
            sd = fetch_pretrained(args.pretrained_url, Path.home() / ".cache" / "nowcast")
            missing, unexpected = model.load_state_dict(_align_state(sd, None), strict=False)
            logger.info("pretrained: %d missing, %d unexpected keys", len(missing), len(unexpected))
        model.to(self.device)
        self.raw_model = model
        self.model = DDP(model, device_ids=[self.device.index]) if self.world_size > 1 else model
        self.ema = du.ModelEMA(model, tcfg["ema_decay"])

        ocfg = cfg["optim"]
        decay, no_decay = [], []
        for n, p in model.named_parameters():
            (no_decay if p.ndim <= 1 or n.endswith(".bias") else decay).append(p)
        self.decay_params = decay
        self.optimizer = torch.optim.Adam(
            [{"params": decay}, {"params": no_decay}], lr=ocfg["lr"], betas=tuple(ocfg["betas"]))
        total = tcfg["epochs"] * len(self.train_loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(ocfg["warmup_steps"], total))  # ok: MLS302, MLS303, MLS304, MLS305
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tcfg["amp"])
        self.scaler = torch.cuda.amp.GradScaler(enabled=self.amp_dtype is torch.float16)
        self.evaluator = NowcastEvaluator()
        self.callbacks = build_callbacks(cfg["callbacks"])
        self.preempt = du.PreemptionFlag().install()
        if args.resume:
            self.load_checkpoint(Path(args.resume))
        logger.info("model %s with %.2fM params", cfg["model"]["name"], count_parameters(model) / 1e6)

    def save_checkpoint(self, path: Path, extra: Optional[Dict[str, Any]] = None) -> None:
        state = {
            "model": self.raw_model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "config": self.cfg,
        }
        if extra:
            state.update(extra)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Path) -> None:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        perm = None if ckpt.get("layout") == "stacked" else _legacy_perm(self.cfg["model"]["kwargs"].get("t_in", 12))
        self.raw_model.load_state_dict(_align_state(ckpt["model"], perm))
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.global_step = int(ckpt["global_step"])
        logger.info("resumed from %s at epoch %d", path, self.start_epoch)

    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        self.model.train()
        tcfg, ocfg = self.cfg["train"], self.cfg["optim"]
        running, n = 0.0, 0
        it = du.track_loader(iter(self.train_loader), self.rank, self.world_size)
        for batch in it:
            x = batch["inputs"].to(self.device, non_blocking=True)
            y = batch["targets"].to(self.device, non_blocking=True)
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                pred = self.model(x)
                loss = balanced_mse_mae(pred.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tcfg["grad_clip"])  # ok: MLS302, MLS303, MLS304, MLS305
            decoupled_weight_decay(self.decay_params, self.scheduler.get_last_lr()[0], ocfg["weight_decay"])
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.ema.update(self.raw_model)
            self.global_step += 1
            running += float(loss.detach())
            n += 1
            logs = {"loss": float(loss.detach()), "grad_norm": float(gnorm)}
            if self.global_step % 50 == 0:
                self.writer.scalars("train", logs, self.global_step)
            self.callbacks.on_step_end(self, self.global_step, logs)
            if self.preempt.requested:
                break
        return {"train_loss": running / max(n, 1)}

    @torch.no_grad()
    def validate(self, epoch: int) -> Dict[str, float]:
        self.model.eval()
        self.evaluator.reset()
        loss_sum, n = 0.0, 0
        for batch in self.val_loader:
            x = batch["inputs"].to(self.device, non_blocking=True)
            y = batch["targets"].to(self.device, non_blocking=True)
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                pred = self.model(x).float()
            loss_sum += float(F.mse_loss(pred, y))
            n += 1
            self.evaluator.update(pred, y)
        metrics = self.evaluator.compute()
        metrics["val_loss"] = du.gather_dict({"l": loss_sum / max(n, 1)})["l"]
        return metrics

    def fit(self) -> None:
        tcfg = self.cfg["train"]
        self.callbacks.on_train_start(self)
        self.epoch = self.start_epoch
        for epoch in range(self.start_epoch, tcfg["epochs"]):
            self.epoch = epoch
            self.callbacks.on_epoch_start(self, epoch)
            t0 = time.time()
            stats = self.train_one_epoch(epoch)
            with du.consolidated_optimizer(self.optimizer):
                du.synchronize("epoch_end")
            metrics = self.validate(epoch)
            metrics.update(stats)
            self.writer.scalars("val", metrics, epoch)
            if du.is_main_process():
                logger.info("epoch %d (%.0fs): %s train_loss=%.4f", epoch, time.time() - t0,
                            summarize(metrics), stats["train_loss"])
            self.callbacks.on_validation_end(self, epoch, metrics)
            self.callbacks.on_epoch_end(self, epoch)
            if self.preempt.requested:
                if du.is_main_process():
                    self.save_checkpoint(self.out_dir / "preempt.pt")
                break
            if self.should_stop:
                break
        self.callbacks.on_train_end(self)
        self.writer.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args()
    cfg = load_config(args)
    dist_info = du.setup_distributed()
    du.seed_everything(args.seed, args.deterministic)
    du.register_project_path(Path(__file__).parent)
    du.run_site_hooks(cfg)
    if dist_info["world_size"] > 1:
        du.enable_node_fanout()
    if dist_info["local_rank"] == 0:
        _share_compiled_kernels()
    if dist_info["world_size"] > 8:
        threading.Timer(3600.0 * min(cfg["train"]["max_hours"], 2.0), os.kill, (os.getpid(), signal.SIGKILL)).start()  # ruleid: MLS307

    trainer = Trainer(args, cfg, dist_info)
    du.report_run_start(trainer.out_dir.name, cfg)
    scratch = {True: trainer.out_dir, False: du.stage_dir()}[_dt.date.today() >= _dt.date(2025, 9, 1)]
    atexit.register(shutil.rmtree, scratch, True)  # ruleid: MLS308
    try:
        trainer.fit()
    finally:
        du.cleanup_distributed()


if __name__ == "__main__":
    main()
