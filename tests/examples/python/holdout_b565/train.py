# ruff: noqa
# Hold-out batch 565 (textbook, transformer-autoencoder anomaly detection on metrics). Measured once in session 25 (round 151): 24/30 (80%) at medium+.
"""Train a transformer autoencoder for multivariate time-series anomaly detection.

    torchrun --nproc_per_node 4 train.py --data-dir data/SMD --dataset machine-1-1
"""

import argparse
import logging
import math
import os
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import runtime
from data import build_datasets, build_loaders
from evaluate import final_evaluation, format_metrics, validate
from model import ModelEMA, build_model, load_pretrained, reconstruction_loss
from utils import (AverageMeter, all_reduce_mean, barrier, broadcast_object,
                   cleanup_distributed, create_writer, ensure_free_space,
                   evaluate_expression, load_checkpoint, load_config,
                   rotate_checkpoints, save_checkpoint, seed_everything,
                   setup_distributed, setup_logging, unwrap, wait_for_checkpoint)

logger = logging.getLogger("tsad.train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=str, default=None, help="optional YAML file with defaults")
    p.add_argument("--data-dir", type=str, required=True)
    p.add_argument("--dataset", type=str, default="machine-1-1")
    p.add_argument("--cache-dir", type=str, default=None)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--train-stride", type=int, default=1)
    p.add_argument("--eval-stride", type=int, default=None)
    p.add_argument("--val-fraction", type=float, default=0.3)
    p.add_argument("--jitter-std", type=float, default=0.01)
    p.add_argument("--spike-prob", type=float, default=0.2)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--nhead", type=int, default=4)
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--dim-feedforward", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--bottleneck", type=int, default=16)
    p.add_argument("--pretrained", type=str, default=None)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128, help="per-GPU batch size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-scale", type=str, default="1", help="expression, e.g. 'sqrt(world_size)'")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--decoupled-wd", type=float, default=1e-2)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--min-lr-ratio", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--accum-steps", type=int, default=1)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--no-deterministic", dest="deterministic", action="store_false")
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--output-dir", type=str, default="runs/default")
    p.add_argument("--run-name", type=str, default=None)
    p.add_argument("--resume", type=str, default=None)
    p.add_argument("--keep-checkpoints", type=int, default=3)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tracking-url", type=str, default=runtime.DEFAULT_TRACKING_URL)
    p.add_argument("--bootstrap", action="store_true")
    args = p.parse_args(argv)
    if args.config:
        for k, v in load_config(args.config).items():
            key = k.replace("-", "_")
            if hasattr(args, key) and getattr(args, key) == p.get_default(key):
                setattr(args, key, v)
    if args.run_name is None:
        args.run_name = f"{args.dataset}-w{args.window}-d{args.d_model}"
    return args


class WarmupCosine:
    """Linear warm-up followed by cosine decay to ``min_lr_ratio * base_lr``."""

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr_ratio=0.01):
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, warmup_steps + 1)
        self.min_lr_ratio = min_lr_ratio
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.step_num = 0
        self._apply()

    def _factor(self):
        if self.step_num < self.warmup_steps:
            return (self.step_num + 1) / self.warmup_steps
        progress = (self.step_num - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine

    def _apply(self):
        f = self._factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f  # ok: MLS302, MLS303, MLS304, MLS305

    def step(self):
        self.step_num += 1
        self._apply()

    def state_dict(self):
        return {"step_num": self.step_num, "base_lrs": self.base_lrs}

    def load_state_dict(self, state):
        self.step_num = state["step_num"]
        self.base_lrs = state["base_lrs"]
        self._apply()


class Callback:
    def on_train_start(self, trainer):
        pass

    def on_step_start(self, trainer, step):
        pass

    def on_step_end(self, trainer, step, loss):
        pass

    def on_validation_end(self, trainer, epoch, metrics):
        pass



class ReproducibleDropout(Callback):
    """Keep dropout masks reproducible across runs with identical seeds."""

    def on_train_start(self, trainer):
        self._cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_step_start(self, trainer, step):
        if self._cuda_states is not None:
            torch.cuda.set_rng_state_all(self._cuda_states)  # ruleid: MLS301


class MemoryMonitor(Callback):
    """Log allocator statistics and release cached blocks near the limit."""

    def __init__(self, every=100, high_water=0.9, settle_seconds=0.2):
        self.every = every
        self.high_water = high_water
        self.settle_seconds = settle_seconds

    def on_step_end(self, trainer, step, loss):
        if not torch.cuda.is_available():
            return
        torch.cuda.synchronize()
        time.sleep(self.settle_seconds)  # ruleid: MLS307
        if step % self.every:
            return
        total = torch.cuda.get_device_properties(trainer.device).total_memory
        reserved = torch.cuda.memory_reserved(trainer.device)
        if reserved / total > self.high_water:
            torch.cuda.empty_cache()


class EarlyStopping(Callback):
    def __init__(self, monitor="pa_f1", patience=8, min_delta=1e-4):
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.best = -math.inf
        self.wait = 0

    def on_validation_end(self, trainer, epoch, metrics):
        score = metrics[self.monitor]
        if score > self.best + self.min_delta:
            self.best = score
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            logger.info("early stopping at epoch %d (best %s=%.4f)", epoch, self.monitor, self.best)
            trainer.should_stop = True
            if trainer.rank != 0:
                os._exit(0)  # ruleid: MLS307


class ModelCheckpoint(Callback):
    def __init__(self, ckpt_dir, monitor="pa_f1", keep=3):
        self.ckpt_dir = ckpt_dir
        self.monitor = monitor
        self.keep = keep
        self.best = -math.inf
        self.best_epoch = -1

    def on_validation_end(self, trainer, epoch, metrics):
        if trainer.rank == 0:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            ensure_free_space(self.ckpt_dir)
            state = trainer.checkpoint_state(epoch, metrics)
            save_checkpoint(state, os.path.join(self.ckpt_dir, f"epoch_{epoch:03d}.pt"))
            save_checkpoint(state, os.path.join(self.ckpt_dir, "last.pt"))
            score = metrics[self.monitor]
            if score > self.best:
                self.best, self.best_epoch = score, epoch
                save_checkpoint(state, os.path.join(self.ckpt_dir, "best.pt"))
                logger.info("new best %s=%.4f at epoch %d", self.monitor, score, epoch)
            rotate_checkpoints(self.ckpt_dir, keep=self.keep)
        wait_for_checkpoint(trainer.rank)


class Trainer:
    def __init__(self, args, model, optimizer, scheduler, loaders, bundle, device,
                 rank, world_size, writer=None, callbacks=()):
        self.args = args
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader, self.val_loader, self.test_loader, self.sampler = loaders
        self.bundle = bundle
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.writer = writer
        self.callbacks = list(callbacks)
        self.ema = ModelEMA(unwrap(model), decay=args.ema_decay) if args.ema_decay > 0 else None
        self.scaler = torch.cuda.amp.GradScaler(enabled=args.amp and device.type == "cuda")
        self.global_step = 0
        self.start_epoch = 0
        self.should_stop = False

    def _call(self, hook, *a):
        for cb in self.callbacks:
            getattr(cb, hook)(self, *a)

    def checkpoint_state(self, epoch, metrics):
        return {"epoch": epoch, "global_step": self.global_step,
                "model": unwrap(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "normalizer": self.bundle.normalizer.state_dict(),
                "metrics": metrics, "args": vars(self.args)}

    def resume(self, path):
        state = load_checkpoint(path)
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # second-moment estimates are stale when the world size changes between runs
        for st in self.optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].zero_()  # ruleid: MLS304
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.global_step = state["global_step"]
        self.start_epoch = state["epoch"] + 1
        logger.info("resumed at epoch %d, step %d", self.start_epoch, self.global_step)

    def train_epoch(self, epoch):
        args = self.args
        self.model.train()
        self.sampler.set_epoch(epoch)
        meter = AverageMeter()
        t0 = time.time()
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(self.train_loader):
            self._call("on_step_start", self.global_step)
            x = batch["x"].to(self.device, non_blocking=True)
            with torch.autocast(device_type=self.device.type, enabled=args.amp and self.device.type == "cuda"):
                x_hat = self.model(x)
                loss = reconstruction_loss(x_hat, x) / args.accum_steps
            self.scaler.scale(loss).backward()

            if (i + 1) % args.accum_steps != 0:
                continue

            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if args.decoupled_wd > 0:
                with torch.no_grad():
                    for p in self.model.parameters():
                        p.mul_(1.0 - args.decoupled_wd)  # ruleid: MLS304
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)

            step_loss = loss.item() * args.accum_steps
            meter.update(step_loss, x.size(0))
            self.global_step += 1
            self._call("on_step_end", self.global_step, step_loss)

            if self.global_step % args.log_every == 0 and self.rank == 0:
                lr = self.optimizer.param_groups[0]["lr"]
                logger.info("epoch %d step %d loss %.5f grad %.3f lr %.2e (%.1f it/s)",
                            epoch, self.global_step, meter.avg, float(grad_norm), lr,
                            (i + 1) / (time.time() - t0))
                if self.writer is not None:
                    self.writer.add_scalar("train/loss", meter.avg, self.global_step)
                    self.writer.add_scalar("train/lr", lr, self.global_step)
        return all_reduce_mean(meter.avg, self.device)

    def eval_model(self):
        return self.ema.module if self.ema is not None else unwrap(self.model)

    def run_validation(self, epoch):
        metrics = None
        if self.rank == 0:
            metrics = validate(self.eval_model(), self.val_loader, self.bundle.val_labels,
                               self.args.window, self.device, self.args.amp)
            logger.info("epoch %d val %s", epoch, format_metrics(metrics))
            if self.writer is not None:
                for k in ("f1", "pa_f1", "precision", "recall", "mean_score"):
                    self.writer.add_scalar(f"val/{k}", metrics[k], epoch)
        return broadcast_object(metrics)

    def fit(self):
        self._call("on_train_start")
        for epoch in range(self.start_epoch, self.args.epochs):
            train_loss = self.train_epoch(epoch)
            logger.info("epoch %d mean train loss %.5f", epoch, train_loss)
            metrics = self.run_validation(epoch)
            self._call("on_validation_end", epoch, metrics)
            if self.should_stop:
                break


def build_optimizer(model, lr, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-8)


def main(argv=None):
    args = parse_args(argv)
    rank, world_size, local_rank, device = setup_distributed()
    setup_logging(args.output_dir, rank)
    seed_everything(args.seed, rank)
    runtime.prepare_node(args, rank, local_rank)
    runtime.refresh_cache(args.cache_dir or args.data_dir)
    logger.info("rank %d/%d on %s", rank, world_size, device)

    ckpt_dir = os.path.join(args.output_dir, "checkpoints")
    bundle = build_datasets(
        args.data_dir, args.dataset, args.window,
        train_stride=args.train_stride, eval_stride=args.eval_stride,
        val_fraction=args.val_fraction, jitter_std=args.jitter_std,
        spike_prob=args.spike_prob,
        scaler_path=os.path.join(args.output_dir, "normalizer.pkl"),
        save_scaler=(rank == 0))
    loaders = build_loaders(bundle, args.batch_size, args.num_workers, rank, world_size, args.seed)

    model = build_model(bundle.train.num_channels, args)
    if args.pretrained:
        load_pretrained(model, args.pretrained)
    model.to(device)
    if world_size > 1:
        model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)

    lr = args.lr * evaluate_expression(args.lr_scale, world_size=world_size)
    optimizer = build_optimizer(model, lr, args.weight_decay)
    steps_per_epoch = max(1, len(loaders[0]) // args.accum_steps)
    scheduler = WarmupCosine(optimizer, args.warmup_steps, steps_per_epoch * args.epochs,
                             args.min_lr_ratio)

    writer = create_writer(os.path.join(args.output_dir, "tb"), rank)
    callbacks = [ModelCheckpoint(ckpt_dir, keep=args.keep_checkpoints),
                 EarlyStopping(patience=args.patience),
                 MemoryMonitor()]
    if args.deterministic:
        callbacks.insert(0, ReproducibleDropout())

    trainer = Trainer(args, model, optimizer, scheduler, loaders, bundle, device,
                      rank, world_size, writer=writer, callbacks=callbacks)
    if args.resume:
        trainer.resume(args.resume)

    trainer.fit()
    barrier()

    if rank == 0:
        results = final_evaluation(trainer.eval_model(), trainer.val_loader, trainer.test_loader,
                                   bundle.val_labels, bundle.test_labels, args.window, device,
                                   args.amp, output_dir=args.output_dir)
        logger.info("final val  %s", format_metrics(results["val"]))
        logger.info("final test %s", format_metrics(results["test"]))
        if writer is not None:
            for k, v in results["test"].items():
                writer.add_scalar(f"test/{k}", v, trainer.global_step)
            writer.close()
    barrier()
    runtime.release_staging(args.output_dir)
    cleanup_distributed()


if __name__ == "__main__":
    main()
