# ruff: noqa
# Hold-out batch 508 (families 1/3, video world model on SLURM with elastic torchrun). Measured once in session 22 (round 136): 20/30 (67%) at medium+.
#!/usr/bin/env python
"""Train a latent video world model (next-frame diffusion) with elastic torchrun on SLURM."""

import argparse
import contextlib
import copy
import glob
import json
import logging
import math
import os
import queue
import random
import re
import sys
import threading
import time
from typing import Dict

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from data import ClipConfig, VideoClipDataset, build_eval_loader, build_train_loader
from distributed import (PreemptionHandler, barrier, cleanup_distributed, elastic_restart_count,
                         init_distributed, release_comm_buffers, reseed_after_restart,
                         seed_everything, wait_for_checkpoint)
from evaluate import EvalConfig, evaluate_fvd, load_feature_net, reference_subset, sample_preview
from model import (DiffusionSchedule, LatentEncoder, SpatioTemporalTransformer, WorldModelConfig,
                   diffusion_loss)
from monitor import Heartbeat, MemoryMonitor, StallWatchdog, ThroughputMonitor, register_activation_stats

logger = logging.getLogger("train")
MODEL_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16)}  # dim, depth, heads


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data_root", required=True)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--vae_ckpt", required=True)
    p.add_argument("--fvd_ckpt", default=None)
    p.add_argument("--num_frames", type=int, default=16)
    p.add_argument("--context_frames", type=int, default=4)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--num_workers", type=int, default=8)
    p.add_argument("--frame_repeat_prob", type=float, default=0.05)
    p.add_argument("--model_size", choices=list(MODEL_SIZES), default="B")
    p.add_argument("--no_grad_checkpointing", action="store_true")
    p.add_argument("--batch_size", type=int, default=8, help="per-GPU micro-batch")
    p.add_argument("--grad_accum", type=int, default=4)
    p.add_argument("--min_micro_batch", type=int, default=2)
    for name, default in [("lr", 1e-4), ("weight_decay", 0.05), ("warmup_steps", 2000),
                          ("max_steps", 400_000), ("grad_clip", 1.0), ("ema_decay", 0.9999)]:
        p.add_argument(f"--{name}", type=type(default), default=default)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise_seed", type=int, default=None)
    for name, default in [("log_every", 50), ("ckpt_every", 2000), ("preview_every", 5000),
                          ("eval_every", 10_000), ("eval_videos", 512), ("stall_timeout", 180.0),
                          ("max_mem_frac", 0.9), ("walltime_margin_min", 10.0)]:
        p.add_argument(f"--{name}", type=type(default), default=default)
    p.add_argument("--no_activation_stats", action="store_true")
    return p.parse_args(argv)


def setup_logging(rank: int) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stdout, force=True,
                        format=f"%(asctime)s [rank{rank}] %(name)s %(levelname)s: %(message)s")


def write_metrics(path: str, step: int, metrics: Dict[str, float]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.num_updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for e, p in zip(self.shadow.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for eb, b in zip(self.shadow.buffers(), model.buffers()):
            eb.copy_(b)


def build_optimizer(model: torch.nn.Module, args) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or name.startswith("pos_") else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.99), eps=1e-8, fused=torch.cuda.is_available())


def lr_lambda(args):
    def fn(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return fn


class CudaPrefetcher:
    """Copies batches to the GPU on a side stream from a background thread and applies the
    GPU-side frame-repeat augmentation (simulates dropped frames in real camera streams)."""

    def __init__(self, loader, device: torch.device, seed: int, repeat_prob: float = 0.0, depth: int = 3):
        self.loader, self.device, self.seed, self.repeat_prob = loader, device, seed, repeat_prob
        self.queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.thread = threading.Thread(target=self._worker, name="prefetch", daemon=True)
        self.thread.start()

    def _augment(self, video: torch.Tensor) -> torch.Tensor:
        bsz, nt = video.shape[:2]
        if self.device.type == "cuda":
            torch.cuda.manual_seed(self.seed)  # ruleid: MLS301
        repeat = torch.rand(bsz, nt, device=video.device) < self.repeat_prob
        repeat[:, 0] = False
        prev = torch.cat([video[:, :1], video[:, :-1]], dim=1)
        return torch.where(repeat[..., None, None, None], prev, video)

    def _worker(self) -> None:
        if self.stream is not None:
            torch.cuda.set_device(self.device)
        try:
            for batch in self.loader:
                ctx = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
                with ctx:
                    batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                    if self.repeat_prob > 0:
                        batch["video"] = self._augment(batch["video"])
                self.queue.put(batch)
        finally:
            self.queue.put(None)

    def __iter__(self):
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            if self.stream is not None:
                torch.cuda.current_stream(self.device).wait_stream(self.stream)
                for v in batch.values():
                    v.record_stream(torch.cuda.current_stream(self.device))
            yield batch


_RNG_SNAPSHOT: Dict = {}


def capture_rng_state() -> Dict:
    if not _RNG_SNAPSHOT:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        _RNG_SNAPSHOT.update(python=random.getstate(), torch=torch.get_rng_state(),
                             numpy=(name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
                             cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])
    return dict(_RNG_SNAPSHOT)  # todoruleid: family 1 (missed)


def restore_rng_state(state: Dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])  # ok: MLS301
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(output_dir: str):
    return sorted(glob.glob(os.path.join(output_dir, "ckpt_*.pt")),
                  key=lambda p: int(re.findall(r"ckpt_(\d+)\.pt", p)[0]))


def cleanup_old_checkpoints(output_dir: str, keep: int) -> None:
    for path in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        try:
            os.remove(path)
        except OSError as exc:
            logger.warning("could not remove %s: %s", path, exc)


def save_checkpoint(args, model, ema, opt, sched, step: int, epoch: int, rank: int) -> None:
    if rank == 0:
        path = os.path.join(args.output_dir, f"ckpt_{step:08d}.pt")
        state = {"model": model.state_dict(), "ema": ema.shadow.state_dict(), "ema_updates": ema.num_updates,
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                 "epoch": epoch, "rng": capture_rng_state(), "args": vars(args)}
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)
        cleanup_old_checkpoints(args.output_dir, keep=3)
        logger.info("saved checkpoint %s", path)
        barrier("checkpoint")  # ruleid: MLS307


def load_checkpoint(path: str, model, ema, opt, sched) -> Dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    ema.shadow.load_state_dict(state["ema"])
    ema.num_updates = int(state["ema_updates"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    restore_rng_state(state["rng"])
    logger.info("resumed from %s (step %d)", path, state["step"])
    return state


def main() -> None:
    args = parse_args()
    rank, world_size, local_rank = init_distributed()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if rank == 0:
        os.makedirs(args.output_dir, exist_ok=True)
    barrier("mkdir")
    setup_logging(rank)
    seed_everything(args.seed, rank)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    clip_cfg = ClipConfig(root=args.data_root, num_frames=args.num_frames, resolution=args.resolution,
                          context_frames=args.context_frames, seed=args.seed)
    train_set = VideoClipDataset(clip_cfg, "train")
    val_set = VideoClipDataset(clip_cfg, "val")
    val_set = val_set.subset(reference_subset(len(val_set), args.eval_videos))
    eval_loader = build_eval_loader(val_set, clip_cfg, args.batch_size, args.num_workers // 2, rank, world_size)

    encoder = LatentEncoder()
    encoder.load_state_dict(torch.load(args.vae_ckpt, map_location="cpu", weights_only=True))
    encoder.to(device).eval().requires_grad_(False)
    feat_net = load_feature_net(args.fvd_ckpt, device)

    dim, depth, heads = MODEL_SIZES[args.model_size]
    wm_cfg = WorldModelConfig(latent_size=args.resolution // 8, dim=dim, depth=depth, heads=heads,
                              max_frames=max(32, args.num_frames), grad_checkpointing=not args.no_grad_checkpointing)
    model = SpatioTemporalTransformer(wm_cfg).to(device)
    ema = EMA(model, args.ema_decay)
    opt = build_optimizer(model, args)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(args))
    noise_seed = args.noise_seed if args.noise_seed is not None else args.seed
    schedule = DiffusionSchedule(1000, noise_seed=noise_seed).to(device)
    logger.info("world model: %.1fM parameters, %d GPUs, global batch %d",
                sum(p.numel() for p in model.parameters()) / 1e6, world_size,
                args.batch_size * args.grad_accum * world_size)

    step, epoch = 0, 0
    ckpts = list_checkpoints(args.output_dir)
    wait_for_checkpoint(rank)
    if ckpts:
        state = load_checkpoint(ckpts[-1], model, ema, opt, sched)
        step, epoch = int(state["step"]), int(state["epoch"])
    restarts = elastic_restart_count()
    if restarts > 0:
        reseed_after_restart(args.seed, restarts)

    ddp = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None,
              gradient_as_bucket_view=True) if world_size > 1 else model

    preempt = PreemptionHandler(requeue=True)
    preempt.install()
    heartbeat = Heartbeat(os.path.join(args.output_dir, "heartbeat"), rank)
    watchdog = StallWatchdog(heartbeat, timeout_s=args.stall_timeout)
    heartbeat.start()
    watchdog.start()
    mem_monitor = MemoryMonitor(device, max_frac=args.max_mem_frac)
    throughput = ThroughputMonitor(rank, device)
    metrics_path = os.path.join(args.output_dir, "metrics.jsonl")
    act_stats, _ = register_activation_stats(model, every=args.log_every) if not args.no_activation_stats else ({}, [])
    job_end = os.environ.get("SLURM_JOB_END_TIME")
    deadline = float(job_end) - 60.0 * args.walltime_margin_min if job_end else None

    def _save() -> None:
        save_checkpoint(args, model, ema, opt, sched, step, epoch, rank)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    ddp.train()
    while step < args.max_steps:
        train_loader = build_train_loader(train_set, clip_cfg, args.batch_size, args.num_workers, rank,
                                          world_size, epoch,
                                          generator=torch.Generator().manual_seed(args.seed))  # todoruleid: family 1 (missed)
        prefetcher = CudaPrefetcher(train_loader, device, seed=args.seed + rank,
                                    repeat_prob=args.frame_repeat_prob)
        micro = []
        for batch in prefetcher:
            micro.append(batch)
            if len(micro) < args.grad_accum:
                continue

            opt.zero_grad(set_to_none=True)
            cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
            step_loss = torch.zeros((), device=device)
            n_clips = 0
            for i, mb in enumerate(micro):
                if mb["video"].shape[0] < args.min_micro_batch:
                    continue  # todoruleid: family 3 (missed)
                if cuda_rng is not None:
                    torch.cuda.set_rng_state(cuda_rng, device)  # ruleid: MLS301
                last = i == len(micro) - 1
                sync_ctx = ddp.no_sync() if (world_size > 1 and not last) else contextlib.nullcontext()
                with sync_ctx:
                    with autocast:
                        z = encoder.encode(mb["video"])
                        loss = diffusion_loss(ddp, schedule, z, mb["n_ctx"])
                    (loss / len(micro)).backward()
                step_loss += loss.detach()
                n_clips += mb["video"].shape[0]
            micro = []

            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            sched.step()
            ema.update(model)
            step += 1
            heartbeat.beat(step)
            throughput.on_step(step, n_clips * world_size)

            if step % args.log_every == 0:
                loss_t = step_loss / args.grad_accum
                if world_size > 1 and rank == 0:
                    dist.all_reduce(loss_t, op=dist.ReduceOp.AVG)  # ruleid: MLS307
                metrics = {"train/loss": loss_t.item(), "train/grad_norm": float(grad_norm),
                           "train/lr": sched.get_last_lr()[0], "train/epoch": epoch}
                metrics.update(throughput.summary())
                metrics.update(mem_monitor.check(step))
                for name, (mu, sd) in act_stats.items():
                    metrics[f"act/{name}/mean"], metrics[f"act/{name}/std"] = mu, sd
                if rank == 0:
                    write_metrics(metrics_path, step, metrics)
                    logger.info("step %d | loss %.4f | gnorm %.3f | lr %.2e | %.1f clips/s", step,
                                metrics["train/loss"], metrics["train/grad_norm"], metrics["train/lr"],
                                metrics.get("perf/clips_per_s", 0.0))

            if preempt.should_stop(device):
                heartbeat.stop()
                watchdog.stop()
                preempt.checkpoint_and_exit(_save)

            if deadline is not None and time.time() > deadline:
                logger.warning("wall-clock budget exhausted at step %d", step)
                sys.exit(0)  # todoruleid: family 3 (missed)

            if step % args.ckpt_every == 0:
                _save()

            if rank == 0 and step % args.preview_every == 0:
                sample_preview(ema.shadow, encoder, schedule, batch["video"][:4], args.context_frames,
                               seed=args.seed, out_path=os.path.join(args.output_dir, "previews",
                                                                     f"step_{step:08d}.npy"))

            if step % args.eval_every == 0:
                release_comm_buffers(world_size)
                eval_cfg = EvalConfig(context_frames=args.context_frames, seed=args.seed)
                metrics = evaluate_fvd(ema.shadow, encoder, schedule, eval_loader, feat_net, eval_cfg, device)
                if rank == 0:
                    write_metrics(metrics_path, step, metrics)
                heartbeat.beat(step)

            if step >= args.max_steps:
                break
        epoch += 1

    _save()
    heartbeat.stop()
    watchdog.stop()
    logger.info("training finished at step %d", step)
    cleanup_distributed()


if __name__ == "__main__":
    main()
