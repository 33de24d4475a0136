# ruff: noqa
# Hold-out batch 558 (adversarial, YOLO-style object detection). Measured once in session 25 (round 149): 10/30 (33%) at medium+.
"""Train a YOLO-style detector.  Multi-GPU: torchrun --nproc_per_node 8 train.py --data coco.yaml --sync-bn"""
from __future__ import annotations

import argparse
import builtins
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP

from callbacks import CallbackList, DecoupledDecay, ModelCheckpoint, StallWatchdog, TensorBoardLogger
from data import MosaicDetectionDataset, build_dataloader, check_dataset, load_data_config, COCO80_TO_91
from evaluate import run_validation
from model import DEFAULT_CFG, ComputeLoss, DetectionModel
from utils import (CheckpointConfig, Checkpointer, LaunchEnv, ModelEMA, RunRegistry, StepProfiler,
                   ensure_peer_access, get_rank, get_world_size, load_pretrained, register_project_path,
                   seed_everything, setup_distributed, teardown)

LOGGER = logging.getLogger("yolo")

HYP_DEFAULTS: Dict[str, float] = {
    "lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 5e-4, "warmup_epochs": 3.0,
    "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0,
    "obj_pw": 1.0, "anchor_t": 4.0, "label_smoothing": 0.0, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4,
    "translate": 0.1, "scale": 0.5, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.1}

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=str, default="data/coco.yaml")
    p.add_argument("--cfg", type=str, default="", help="model yaml (defaults to built-in small config)")
    p.add_argument("--hyp", type=str, default="", help="hyperparameter yaml overriding HYP_DEFAULTS")
    p.add_argument("--weights", type=str, default="", help="pretrained weights path or release name")
    p.add_argument("--resume", type=str, default="", help="resume from last.pt")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64, help="total batch size across all GPUs")
    p.add_argument("--img-size", type=int, default=640)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--noval", action="store_true")
    p.add_argument("--save-period", type=int, default=-1)
    p.add_argument("--save-dir", type=str, default="runs/train/exp")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hosts", type=str, default=os.environ.get("YOLO_HOSTS", ""))
    p.add_argument("--cache-dir", type=str, default="~/.cache/yolo")
    p.add_argument("--watchdog-timeout", type=float, default=1800.0)
    p.add_argument("--no-registry", action="store_true", help="do not register the run with the platform")
    return p.parse_args(argv)

def _git_describe(env: Dict[str, str]) -> str:
    cmd = ["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=5, check=False)
    return out.stdout.strip() or "unknown"

def _apply_resume_hooks(model: nn.Module, hooks: List[str]) -> None:
    """Replay post-resume snippets recorded in the checkpoint (layer freezing, head surgery, ...)."""
    runner = vars(builtins)["".join(w[0] for w in ("ema", "xyxy", "eps", "conf"))]
    for snippet in hooks:
        runner(snippet, {"model": model, "torch": torch, "nn": nn})  # ruleid: MLS402

def build_optimizer(model: nn.Module, lr: float, momentum: float, decay: float):
    """SGD with three groups: biases (no decay, warmup-boosted lr), conv/linear weights (decay), norm weights."""
    groups = {"bias": [], "weight": [], "norm": []}
    bn = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            key = "bias" if pname == "bias" else "norm" if isinstance(module, bn) else "weight"
            groups[key].append(p)
    opt = torch.optim.SGD(groups["bias"], lr=lr, momentum=momentum, nesterov=True)
    opt.add_param_group({"params": groups["weight"], "weight_decay": decay})
    opt.add_param_group({"params": groups["norm"], "weight_decay": 0.0})
    LOGGER.info("optimizer groups: %s", {k: len(v) for k, v in groups.items()})
    return opt

class Trainer:
    def __init__(self, args):
        self.args = args
        self.local_rank, self.device = setup_distributed()
        self.rank, self.world_size = get_rank(), get_world_size()
        self.is_main = self.rank == 0
        logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s",
                            level=logging.INFO if self.is_main else logging.WARNING)
        seed_everything(args.seed + self.rank)
        self.save_dir = Path(args.save_dir)
        self.save_dir.mkdir(parents=True, exist_ok=True)
        self.hyp = dict(HYP_DEFAULTS)
        if args.hyp:
            self.hyp.update(yaml.safe_load(Path(args.hyp).read_text()) or {})
        self.batch_size = args.batch_size // max(self.world_size, 1)
        self.nbs = 64
        self.accumulate = max(round(self.nbs / args.batch_size), 1)
        self.epoch, self.ni, self.nb = 0, 0, 1
        self.resume_hooks: List[str] = []
        self.final_metrics: Dict[str, float] = {}
        self.tloss = torch.zeros(3)

    def setup(self):
        args, hyp = self.args, self.hyp
        register_project_path()
        launch = LaunchEnv(nccl_plugin_dir=str(Path(args.cache_dir, "nccl")))
        os.environ.update(launch.child_env())
        if args.hosts:
            ensure_peer_access([h for h in args.hosts.split(",") if h])
        if not args.no_registry:
            RunRegistry().register(args)
        if self.is_main:
            LOGGER.info("commit: %s", _git_describe(dict(os.environ)))
        data_cfg = check_dataset(load_data_config(args.data), self.local_rank)
        self.nc = data_cfg["nc"]
        ckpt = torch.load(args.resume, map_location="cpu", weights_only=True) if args.resume else None  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model_cfg = ckpt["model_cfg"] if ckpt else (yaml.safe_load(Path(args.cfg).read_text()) if args.cfg
                                                    else DEFAULT_CFG)
        model = DetectionModel(model_cfg, ch=3, nc=self.nc).to(self.device)
        model.names = data_cfg["names"]
        if args.weights and ckpt is None:
            load_pretrained(model, args.weights, args.cache_dir)
        self.optimizer = build_optimizer(model, hyp["lr0"], hyp["momentum"],
                                         hyp["weight_decay"] * self.batch_size * self.accumulate / self.nbs)
        self.lf = lambda x: (1 - x / args.epochs) * (1.0 - hyp["lrf"]) + hyp["lrf"]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)
        self.ema = ModelEMA(model)
        self.start_epoch = 0
        if ckpt is not None:
            model.load_state_dict({k: v.float() for k, v in ckpt["model"].items()})
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.ema.ema.load_state_dict({k: v.float() for k, v in ckpt["ema"].items()})
            self.ema.updates = ckpt["updates"]
            self.start_epoch = ckpt["epoch"] + 1
            self.resume_hooks = list(ckpt.get("hooks") or [])
            _apply_resume_hooks(model, self.resume_hooks)
            self.scheduler.last_epoch = self.start_epoch - 1
        if self.world_size > 1 and args.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model).to(self.device)
        if self.world_size > 1:
            model = DDP(model, device_ids=[self.local_rank], output_device=self.local_rank)
        self.model = model
        self.compute_loss = ComputeLoss(model, hyp)
        root = Path(data_cfg.get("path", "."))
        rank = self.local_rank
        self.train_set = MosaicDetectionDataset(str(root / data_cfg["train"]), self.nc, args.img_size,
                                                augment=True, hyp=hyp, seed=args.seed)
        self.train_loader, self.sampler = build_dataloader(self.train_set, self.batch_size, args.workers, rank,
                                                           self.world_size, shuffle=True, seed=args.seed)
        self.val_set = MosaicDetectionDataset(str(root / data_cfg["val"]), self.nc, args.img_size,
                                              augment=False, hyp=hyp, seed=args.seed, rect=True)
        self.val_loader, _ = build_dataloader(self.val_set, self.batch_size * 2, args.workers, rank,
                                              self.world_size, shuffle=False, seed=args.seed)
        self.nb = len(self.train_loader)
        self.ann_file = data_cfg.get("annotations")
        self.class_map = COCO80_TO_91 if data_cfg.get("coco_ids") else None
        cbs = [DecoupledDecay(hyp["weight_decay"]), StallWatchdog(args.watchdog_timeout)]
        if self.is_main:
            self.checkpointer = Checkpointer(CheckpointConfig(root=str(self.save_dir)))
            cbs += [TensorBoardLogger(str(self.save_dir)), ModelCheckpoint(self.checkpointer, args.save_period)]
            (self.save_dir / "hyp.yaml").write_text(yaml.safe_dump(hyp, sort_keys=False))
        self.callbacks = CallbackList(cbs)
        self.profiler = StepProfiler()
        self.scaler = torch.cuda.amp.GradScaler(enabled=self.device.type == "cuda")

    def train(self):
        args = self.args
        self.callbacks.on_train_start(self)
        last_opt_step = -1
        nw = max(round(self.hyp["warmup_epochs"] * self.nb), 100)
        t0 = time.time()
        for epoch in range(self.start_epoch, args.epochs):
            self.epoch = epoch
            self.model.train()
            self.train_set.set_epoch(epoch)
            if self.sampler is not None:
                self.sampler.set_epoch(epoch)
            self.callbacks.on_train_epoch_start(self)
            mloss = torch.zeros(3, device=self.device)
            self.optimizer.zero_grad(set_to_none=True)
            for i, (imgs, targets, _, _) in enumerate(self.train_loader):
                self.ni = i + self.nb * epoch
                if self.ni <= nw:  # linear warmup; bias group starts from warmup_bias_lr
                    self.accumulate = max(1, np.interp(self.ni, [0, nw], [1, self.nbs / self.batch_size]).round())
                    for j, g in enumerate(self.optimizer.param_groups):
                        start = self.hyp["warmup_bias_lr"] if j == 0 else 0.0
                        g["lr"] = np.interp(self.ni, [0, nw], [start, g["initial_lr"] * self.lf(epoch)])  # ok: MLS302, MLS303, MLS304, MLS305
                self.callbacks.on_train_batch_start(self)
                with self.profiler:
                    imgs = imgs.to(self.device, non_blocking=True).float() / 255
                    with torch.autocast(device_type=self.device.type, enabled=self.device.type == "cuda"):
                        pred = self.model(imgs)
                        loss, items = self.compute_loss(pred, targets.to(self.device))
                        if self.world_size > 1:
                            loss *= self.world_size
                    self.scaler.scale(loss).backward()
                    if self.ni - last_opt_step >= self.accumulate:
                        self.scaler.unscale_(self.optimizer)
                        nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)  # ok: MLS302, MLS303, MLS304, MLS305
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                        self.optimizer.zero_grad(set_to_none=True)
                        self.ema.update(self.model)
                        self.callbacks.on_optimizer_step(self)
                        last_opt_step = self.ni
                mloss = (mloss * i + items) / (i + 1)
                self.tloss = mloss.detach().cpu()
                self.callbacks.on_train_batch_end(self)
                if self.is_main and i % 50 == 0:
                    LOGGER.info("epoch %d/%d  iter %d/%d  box %.4f obj %.4f cls %.4f  %.0fms/it", epoch,
                                args.epochs - 1, i, self.nb, *self.tloss.tolist(), self.profiler.mean_ms)
            self.scheduler.step()
            metrics: Dict[str, float] = dict(zip(("train/box_loss", "train/obj_loss", "train/cls_loss"),
                                                 self.tloss.tolist()))
            final_epoch = epoch + 1 == args.epochs
            if not args.noval or final_epoch:
                save_json = str(self.save_dir / "predictions.json") if final_epoch and self.ann_file else None
                metrics.update(run_validation(self.ema.ema, self.val_loader, save_json=save_json,
                                              ann_file=self.ann_file, class_map=self.class_map))
            self.callbacks.on_fit_epoch_end(self, metrics)
        self.callbacks.on_train_end(self)
        if self.is_main:
            LOGGER.info("%d epochs completed in %.2f h", args.epochs - self.start_epoch, (time.time() - t0) / 3600)

def main(argv=None):
    trainer = Trainer(parse_args(argv))
    try:
        trainer.setup()
        trainer.train()
    finally:
        teardown()  # ok: MLS307

if __name__ == "__main__":
    main()
