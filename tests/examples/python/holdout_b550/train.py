# ruff: noqa
# Hold-out batch 550 (adversarial, DDPM/DDIM diffusion training). Measured once in session 25 (round 147): 9/31 (29%) at medium+.
"""Train a class-conditional DDPM (cosine schedule, eps-prediction) with EMA and classifier-free guidance.

    torchrun --nproc_per_node 8 train.py --set data.root=/datasets/imagenet64/train --set optim.lr=1e-4
    python train.py --launch-nodes gpu01,gpu02,gpu03,gpu04 --set data.batch_size=32
"""
from __future__ import annotations

import argparse
import ast
import builtins
import copy
import dataclasses
import functools
import logging
import operator
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from callbacks import (EMA, CheckpointManager, LRMonitor, PreviewSampler, ResumeConfig, ScalarLogger, WallClockGuard, load_checkpoint, preserved_rng)
from data import DataConfig, build_loader, infinite_batches
from diffusion import GaussianDiffusion, ModelConfig, UNet, timestep_stream
from dist_utils import LaunchConfig, cleanup, init_distributed, is_main_process, launch_multinode, report_heartbeat, seed_everything
from evaluate import build_feature_extractor, evaluate_model, load_reference_stats, write_report

logger = logging.getLogger("train")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    warmup_steps: int = 5000
    grad_clip: float = 1.0
    total_steps: int = 400_000


@dataclass
class TrainConfig:
    out_dir: str = "runs/ddpm-imagenet64"
    seed: int = 0
    precision: str = "bf16"
    ema_decay: float = 0.9999
    p_uncond: float = 0.1
    log_every: int = 100
    ckpt_every: int = 10_000
    eval_every: int = 50_000
    eval_samples: int = 10_000
    preview_every: int = 5_000
    budget_hours: float = 48.0
    reference: str = "imagenet64"
    override_fallback: str = "eval"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)


def _coerce(raw: str, fallback: str) -> Any:
    try:
        return ast.literal_eval(raw)  # ok: MLS401, MLS402, MLS403
    except (ValueError, SyntaxError):
        pass
    parse = vars(builtins).get(fallback, str)
    try:
        return parse(raw)  # todoruleid: family 8 (missed)
    except Exception:
        return raw


def apply_overrides(cfg: TrainConfig, overrides: List[str]) -> TrainConfig:
    """``--set section.key=value``; values are Python literals or simple expressions like ``2e-4*4``."""
    for item in overrides:
        key, _, raw = item.partition("=")
        *parents, leaf = key.strip().split(".")
        target = functools.reduce(getattr, parents, cfg)
        if not hasattr(target, leaf):
            raise KeyError(f"unknown config key {key}")
        setattr(target, leaf, _coerce(raw.strip(), cfg.override_fallback))
    return cfg


def clip_grads(params: List[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = (torch.linalg.vector_norm(g.detach(), 2.0) for g in grads)
    total = functools.reduce(operator.add, (n * n for n in norms)).sqrt()
    torch._foreach_mul_(grads, torch.clamp(total / (max_norm + 1e-6), min=1.0))  # ruleid: MLS302
    return total


def _refresh_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Second moments from a different world size / batch layout are stale after an elastic restart."""
    reset = operator.methodcaller("zero_")
    list(map(reset, (s["exp_avg_sq"] for s in optimizer.state.values() if "exp_avg_sq" in s)))  # ruleid: MLS304


def param_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name or "embed" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--launch-nodes", default=None, help="comma-separated hosts; ssh-launch torchrun on each")
    args, passthrough = ap.parse_known_args()
    cfg = apply_overrides(TrainConfig(), args.overrides)

    if args.launch_nodes:
        argv = [a for o in args.overrides for a in ("--set", o)] + passthrough
        raise SystemExit(launch_multinode(args.launch_nodes.split(","), cfg.launch, argv))

    st = init_distributed(cfg.launch)
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    seed_everything(cfg.seed + st.rank)
    run_id = time.strftime("%Y%m%d-%H") + "-" + os.environ.get("RUN_NAME", "ddpm")
    out_dir = os.path.join(cfg.out_dir, run_id)
    device = st.device

    loader, dataset, sampler = build_loader(cfg.data, st.rank, st.world_size)
    cfg.model.num_classes = dataset.num_classes if cfg.data.class_cond else 0
    model = UNet(cfg.model).to(device)
    ema = EMA(model, cfg.ema_decay)
    ema_model = copy.deepcopy(model).eval().requires_grad_(False)
    net = DDP(model, device_ids=[st.local_rank]) if st.distributed and device.type == "cuda" else model
    diffusion = GaussianDiffusion(1000, "cosine", "eps", cfg.p_uncond, null_class=cfg.model.num_classes)

    oc = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(model, oc.weight_decay), lr=oc.lr, betas=oc.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / oc.warmup_steps))  # ok: MLS302, MLS303, MLS304, MLS305
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    scaler = torch.cuda.amp.GradScaler(enabled=cfg.precision == "fp16")

    step, start_epoch = 0, 0
    state = load_checkpoint(cfg.resume, cfg.launch.cache_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, start_epoch = state["step"], state.get("epoch", 0)
        _refresh_optimizer(optimizer)

    def ema_fn() -> torch.nn.Module:
        ema.copy_to(ema_model)
        return ema_model

    def snapshot(epoch: int) -> Dict[str, Any]:
        return {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "epoch": epoch,
                "meta": {"model": dataclasses.asdict(cfg.model), "step": step, "run_id": run_id,
                         "diffusion": {"p_uncond": cfg.p_uncond, "null_class": cfg.model.num_classes}}}

    tb = ScalarLogger(os.path.join(out_dir, "tb"))
    ckpt = CheckpointManager(os.path.join(out_dir, "checkpoints"), keep_last=3, monitor="fid")
    callbacks = [
        LRMonitor(scheduler, tb, oc.warmup_steps, cfg.log_every),
        WallClockGuard(run_id, cfg.budget_hours),
        PreviewSampler(diffusion, ema_fn, os.path.join(out_dir, "samples"), cfg.preview_every,
                       cfg.model.num_classes, cfg.data.resolution),
    ]
    t_stream = timestep_stream(diffusion.num_timesteps, cfg.data.batch_size, device, cfg.seed + st.rank)
    feature_net, ref_stats = None, None
    epoch = start_epoch
    t0 = time.time()

    try:
        for epoch, (x, y) in infinite_batches(loader, sampler, start_epoch):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True) if cfg.model.num_classes else None
            t = next(t_stream)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = diffusion.training_losses(net, x, t, y).mean()
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            gnorm = clip_grads(list(model.parameters()), oc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            ema.update(model, step)
            step += 1

            logs = {"loss": loss.item(), "grad_norm": float(gnorm)}
            for cb in callbacks:
                cb.on_step_end(step, logs)
            if step % cfg.log_every == 0:
                logs["img_per_sec"] = cfg.log_every * cfg.data.batch_size * st.world_size / (time.time() - t0)
                t0 = time.time()
                tb.log_dict(logs, step, prefix="train/")
                logger.info("step %d epoch %d loss %.4f gnorm %.3f", step, epoch, logs["loss"], logs["grad_norm"])
                report_heartbeat(cfg.launch, run_id, step, {"loss": logs["loss"]})
            if step % cfg.ckpt_every == 0:
                ckpt.save(snapshot(epoch), step)
            if step % cfg.eval_every == 0:
                if feature_net is None:
                    feature_net = build_feature_extractor(cfg.launch.cache_dir, device)
                    ref_stats = load_reference_stats(cfg.reference, cfg.launch.cache_dir)
                with preserved_rng():
                    metrics = evaluate_model(ema_fn(), diffusion, feature_net, ref_stats, cfg.eval_samples,
                                             125, cfg.model.num_classes, cfg.data.resolution)
                report = write_report(os.path.join(out_dir, f"eval_{step:08d}.json"), metrics, cfg.reference, step)
                tb.log_dict({k: v for k, v in report.items() if isinstance(v, float)}, step, prefix="eval/")
                ckpt.update_best(metrics, lambda: snapshot(epoch), step)
            if step >= oc.total_steps:
                break
    except KeyboardInterrupt:
        logger.info("interrupted at step %d, writing final checkpoint", step)
    ckpt.save(snapshot(epoch), step, name="last.pt")
    tb.close()
    cleanup()


if __name__ == "__main__":
    main()
