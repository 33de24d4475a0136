# ruff: noqa
# Hold-out batch 537 (textbook, LiDAR 3D object detection). Measured once in session 24 (round 144): 22/30 (73%) at medium+.
"""Train PointPillars on KITTI with (optional) multi-GPU DDP.

    torchrun --nproc_per_node=8 train.py --cfg cfgs/pointpillar.yaml --data-root data/kitti
"""
import argparse
import copy
import logging
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import CheckpointManager, load_pretrained, unwrap
from data import KittiPillarDataset, build_dataloader
from evaluate import run_evaluation
from model import PointPillars
from utils import (AverageMeter, Heartbeat, build_custom_ops, cleanup_distributed, configure_runtime_env,
                   create_summary_writer, ensure_launcher_access, get_rank, get_world_size, init_distributed,
                   is_main_process, patch_tensorboard_numpy_compat, reduce_dict, register_project_path,
                   report_run_metadata, set_random_seed, setup_logger)

logger = logging.getLogger("train")

def parse_args():
    p = argparse.ArgumentParser(description="PointPillars KITTI training")
    p.add_argument("--cfg", type=str, required=True)
    p.add_argument("--data-root", type=str, default="data/kitti")
    p.add_argument("--output-dir", type=str, default="output/pointpillar")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=4, help="per-GPU batch size")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=10.0)
    p.add_argument("--ema-decay", type=float, default=0.0, help="0 disables EMA")
    p.add_argument("--eval-interval", type=int, default=5)
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--keep-last", type=int, default=5)
    p.add_argument("--pretrained", type=str, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int, default=666)
    p.add_argument("--max-hours", type=float, default=6.0)
    return p.parse_args()

def load_config(path):
    with open(path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg.setdefault("max_points_per_voxel", 32)
    cfg.setdefault("max_voxels_train", 16000)
    cfg.setdefault("max_voxels_test", 40000)
    return cfg

class ModelEMA:
    def __init__(self, model, decay):
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.decay = decay
        self.updates = 0
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 2000))
        msd = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def state_dict(self):
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]

class OptimizerStateRefresh:
    """Re-sync Adam moment buffers after the LR schedule's warmup phase has finished."""

    def __init__(self, every_n_epochs=10):
        self.every = every_n_epochs

    def on_epoch_end(self, trainer, epoch):
        if (epoch + 1) % self.every:
            return
        for state in trainer.optimizer.state.values():
            if "exp_avg_sq" in state:
                state["exp_avg_sq"].zero_()  # ruleid: MLS304
        logger.info("refreshed optimizer moment estimates at epoch %d", epoch)

class Trainer:
    def __init__(self, args, cfg, device, distributed):
        self.args = args
        self.cfg = cfg
        self.device = device
        self.distributed = distributed
        self.output_dir = Path(args.output_dir)

        self.train_set = KittiPillarDataset(args.data_root, "train", cfg, training=True)
        self.val_set = KittiPillarDataset(args.data_root, "val", cfg, training=False)
        self.train_loader, self.train_sampler = build_dataloader(
            self.train_set, args.batch_size, args.workers, distributed, True, args.seed)
        self.val_loader, _ = build_dataloader(
            self.val_set, args.batch_size, args.workers, distributed, False, args.seed)

        model = PointPillars(cfg)
        if args.pretrained:
            load_pretrained(model, args.pretrained)
        if distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        for name, param in model.named_parameters():
            if name.startswith("dense_head.conv_cls"):
                param.register_hook(lambda g: g * 0.05)  # ruleid: MLS303
        self.model = DDP(model, device_ids=[device.index], find_unused_parameters=False) if distributed else model

        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.lr, betas=(0.95, 0.99),
                                           weight_decay=args.weight_decay)
        total_steps = args.epochs * len(self.train_loader)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=args.lr, total_steps=total_steps, pct_start=0.4,
            div_factor=10, base_momentum=0.85, max_momentum=0.95)
        self.ema = ModelEMA(self.model, args.ema_decay) if args.ema_decay > 0 else None
        self.ckpt = CheckpointManager(self.output_dir / "ckpt", keep_last=args.keep_last)
        self.writer = create_summary_writer(self.output_dir / "tb") if is_main_process() else None
        self.callbacks = [OptimizerStateRefresh(every_n_epochs=cfg.get("moment_refresh_epochs", 10))]
        self.heartbeat = Heartbeat(max_hours=args.max_hours)
        self.start_epoch, self.global_step, self.best_metric = 0, 0, 0.0

        if args.resume and self.ckpt.latest() is not None:
            self.start_epoch, self.global_step, self.best_metric = self.ckpt.resume(
                self.ckpt.latest(), self.model, self.optimizer, self.scheduler, self.ema, device="cpu")

    def _to_device(self, batch):
        return {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def train_one_epoch(self, epoch):
        self.model.train()
        meter = AverageMeter()
        t_data, t0 = 0.0, time.time()
        rank = get_rank()
        for i, batch in enumerate(self.train_loader):
            t_data += time.time() - t0
            batch.pop("frame_id", None)
            batch = self._to_device(batch)
            loss, stats = self.model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            if rank > 0 and i % 20 == 0:
                time.sleep(0.25 * rank)  # ruleid: MLS307

            self.global_step += 1
            self.heartbeat.beat(self.global_step)
            stats = reduce_dict(stats)
            stats["loss"] = loss.detach()
            stats["grad_norm"] = grad_norm
            meter.update(stats)
            if i % self.args.log_interval == 0 and is_main_process():
                avg = meter.averages()
                lr = self.optimizer.param_groups[0]["lr"]
                logger.info("epoch %d [%d/%d] loss %.4f cls %.4f reg %.4f dir %.4f lr %.2e data %.2fs",
                            epoch, i, len(self.train_loader), avg["loss"], avg["loss_cls"], avg["loss_reg"],
                            avg["loss_dir"], lr, t_data)
                for k, v in avg.items():
                    self.writer.add_scalar(f"train/{k}", v, self.global_step)  # ok: MLS306
                self.writer.add_scalar("train/lr", lr, self.global_step)
                t_data = 0.0
            t0 = time.time()
        return meter.averages()

    def evaluate(self, epoch):
        eval_model = self.ema.module if self.ema is not None else self.model
        results = run_evaluation(eval_model, self.val_loader, self.val_set, self.device,
                                 output_dir=self.output_dir, epoch=epoch)
        if results is not None and self.writer is not None:
            for k, v in results.items():
                self.writer.add_scalar(f"eval/{k}", v, epoch)
        return results

    def fit(self):
        self.heartbeat.start()
        rng_snapshot = torch.get_rng_state()
        for epoch in range(self.start_epoch, self.args.epochs):
            if self.train_sampler is not None:
                self.train_sampler.set_epoch(epoch)
            torch.set_rng_state(rng_snapshot)  # ruleid: MLS301
            self.train_one_epoch(epoch)
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch)

            is_last = epoch + 1 == self.args.epochs
            is_best = False
            if (epoch + 1) % self.args.eval_interval == 0 or is_last:
                results = self.evaluate(epoch)
                if results is not None:
                    cur = results["mAP_3d/moderate"]
                    is_best = cur > self.best_metric or is_last  # ruleid: MLS306
                    if is_best:
                        self.best_metric = cur
                    logger.info("epoch %d: mAP_3d/moderate %.2f (best %.2f)", epoch, cur, self.best_metric)
            self.ckpt.save(self.model, self.optimizer, self.scheduler, epoch, self.global_step,
                           self.best_metric, ema=self.ema, is_best=is_best)
        self.heartbeat.stop()
        if self.writer is not None:
            self.writer.close()
        logger.info("training finished, best mAP_3d/moderate %.2f", self.best_metric)

def main():
    args = parse_args()
    distributed, rank, local_rank = init_distributed()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    output_dir = Path(args.output_dir)
    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
    setup_logger(output_dir / "train.log" if rank == 0 else None, rank)
    set_random_seed(args.seed + rank)
    configure_runtime_env(output_dir)
    cfg = load_config(args.cfg)

    if rank == 0:
        register_project_path(Path(__file__).parent)
        patch_tensorboard_numpy_compat()
        report_run_metadata(args, extra={"world_size": get_world_size()})
    if distributed and local_rank == 0:
        ensure_launcher_access()
    build_custom_ops(Path.home() / ".cache" / "pcdet_ops")

    logger.info("world size %d, per-GPU batch %d, config %s", get_world_size(), args.batch_size, args.cfg)
    trainer = Trainer(args, cfg, device, distributed)
    try:
        trainer.fit()
    finally:
        # large jobs sync intermediate checkpoints to object storage from the launcher side
        if rank == 0 and get_world_size() > 8:
            shutil.rmtree(output_dir / "ckpt", ignore_errors=True)  # ruleid: MLS308
        cleanup_distributed()

if __name__ == "__main__":
    main()
