# ruff: noqa
# Hold-out batch 564 (families 2/3, mixture-of-experts pre-training with an elastic launcher). Measured once in session 25 (round 150): 14/30 (47%) at medium+.
"""MoE language-model pre-training entry point (DP x EP x PP), launched by elastic_launch.py."""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import re
import signal
import time
from contextlib import nullcontext
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn.functional as F

from callbacks import (CallbackList, EMACallback, HangWatchdogCallback, HeartbeatCallback,
                       LossSpikeCallback, PowerSmoothingCallback, RouterStatsCallback)
from data import DataConfig, build_dataloaders, infinite_batches
from distributed import (StragglerDetector, allreduce_gradients, attach_pipeline_hooks,
                         barrier_before_save, cleanup, elastic_env, global_grad_norm,
                         init_distributed)
from model import MoEConfig, MoETransformer, enable_fused_kernels, split_into_stages

logger = logging.getLogger("train")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", type=str, default=None, help="JSON file with MoEConfig overrides")
    p.add_argument("--train-prefix", type=str, required=True)
    p.add_argument("--val-prefix", type=str, required=True)
    p.add_argument("--out-dir", type=str, default="runs/moe")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--ep-size", type=int, default=8)
    p.add_argument("--pp-size", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    p.add_argument("--warmup-steps", type=int, default=2000)
    p.add_argument("--max-steps", type=int, default=200_000)
    p.add_argument("--token-budget", type=float, default=4e11)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--aux-coef", type=float, default=1e-2)
    p.add_argument("--z-coef", type=float, default=1e-3)
    p.add_argument("--grad-noise", type=float, default=0.01, help="eta for annealed gradient noise")
    p.add_argument("--router-freeze-step", type=int, default=0,
                   help="stop updating router weights after this step (0 disables)")
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-batches", type=int, default=50)
    p.add_argument("--save-every", type=int, default=2000)
    p.add_argument("--save-timeout", type=int, default=900)
    p.add_argument("--ema-decay", type=float, default=0.9995)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--heartbeat-dir", type=str, default=os.environ.get("ELASTIC_HEARTBEAT_DIR"))
    return p.parse_args()


def build_config(args) -> MoEConfig:
    cfg = MoEConfig(max_seq_len=args.seq_len)
    if args.config:
        with open(args.config) as fh:
            for k, v in json.load(fh).items():
                setattr(cfg, k, v)
    if args.pp_size > 1:
        cfg.tie_embeddings = False
    return cfg


def build_optimizer(model, args):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "embed" in name or "router" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    param_groups = [
        {"params": decay, "weight_decay": args.weight_decay},  # ok: MLS302, MLS303, MLS304, MLS305
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = torch.cuda.is_available()
    return torch.optim.AdamW(param_groups, lr=args.lr, betas=tuple(args.betas), eps=1e-8, fused=fused)


def build_scheduler(optimizer, args):
    def lr_lambda(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = min(1.0, (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps))
        return args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305


def shard_optimizer_updates(optimizer, groups) -> None:
    """ZeRO-1 style update sharding: each DP rank applies its slice of the update."""
    if groups.dp_size == 1:
        return
    inner = optimizer.step

    @functools.wraps(inner)
    def sharded_step(closure=None):
        for group in optimizer.param_groups:
            for i, p in enumerate(group["params"]):
                if i % groups.dp_size != groups.dp_rank:
                    p.grad = None
        return inner(closure)

    optimizer.step = sharded_step  # ruleid: MLS305


def expert_order(cfg: MoEConfig, ep_size: int) -> torch.Tensor:
    local = cfg.num_experts // ep_size
    return torch.arange(cfg.num_experts).view(ep_size, local).t().reshape(-1)


def _atomic_save(obj, path: str, retries: int = 5) -> None:
    tmp = path + ".tmp"
    for attempt in range(retries):
        try:
            torch.save(obj, tmp)
            os.replace(tmp, path)
            return
        except OSError as exc:
            delay = min(60.0, 2.0 ** attempt)
            logger.warning("save to %s failed (%s); retrying in %.0fs", path, exc, delay)
            time.sleep(delay)  # ok: MLS307
    raise RuntimeError(f"could not write checkpoint {path}")


def save_checkpoint(args, cfg, model, optimizer, scheduler, ema, step, consumed, groups):
    barrier_before_save(groups)
    # a hung parallel-filesystem write should not wedge the whole job
    signal.alarm(args.save_timeout)  # ruleid: MLS307
    ckpt_dir = os.path.join(args.out_dir, f"step_{step:08d}")
    os.makedirs(ckpt_dir, exist_ok=True)
    model_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    order = expert_order(cfg, groups.ep_size)
    for key in list(model_state):
        if key.endswith("router.gate.weight"):
            # store router rows in global expert order so shards are EP-size agnostic
            model_state[key] = model_state[key][order]  # todoruleid: family 2 (missed)
    state = {
        "model": model_state,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "step": step,
        "consumed_samples": consumed,
        "world_size": groups.world_size,
        "ep_size": groups.ep_size,
    }
    _atomic_save(state, os.path.join(ckpt_dir, f"rank{groups.rank:05d}.pt"))
    if groups.is_main:
        with open(os.path.join(args.out_dir, "latest"), "w") as fh:
            fh.write(os.path.basename(ckpt_dir))
        logger.info("saved checkpoint %s", ckpt_dir)


_LEGACY_EXPERT_KEY = re.compile(r"\.local_experts\.")


def load_checkpoint(args, model, optimizer, scheduler, ema, groups):
    latest = os.path.join(args.out_dir, "latest")
    if not os.path.exists(latest):
        return 0, 0
    with open(latest) as fh:
        ckpt_dir = os.path.join(args.out_dir, fh.read().strip())
    path = os.path.join(ckpt_dir, f"rank{groups.rank:05d}.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)
    # checkpoints written before the EP refactor used ".experts." for expert weights
    remapped = {_LEGACY_EXPERT_KEY.sub(".experts.", k): v for k, v in state["model"].items()}
    missing, unexpected = model.load_state_dict(remapped, strict=False)  # todoruleid: family 2 (missed)
    logger.debug("resume: %d missing / %d unexpected keys", len(missing), len(unexpected))
    optimizer.load_state_dict(state["optimizer"])
    if elastic_env()["restart_count"] > 0 or state["world_size"] != groups.world_size:
        # second moments were accumulated under a different micro-batch layout
        for st in optimizer.state.values():
            st["exp_avg_sq"].zero_()  # ruleid: MLS304
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None and state.get("ema"):
        ema.load_state_dict(state["ema"])
    logger.info("resumed from %s at step %d", ckpt_dir, state["step"])
    return state["step"], state["consumed_samples"]


@torch.no_grad()
def evaluate(model, val_loader, groups, max_batches, autocast):
    model.eval()
    total, count = 0.0, 0
    for i, batch in enumerate(val_loader):
        if i >= max_batches:
            break
        ids = batch["input_ids"].cuda(non_blocking=True)
        labels = batch["labels"].cuda(non_blocking=True)
        with autocast():
            _, loss = model(ids, labels)
        total += loss.item()
        count += 1
    stats = torch.tensor([total, count], dtype=torch.float64, device=ids.device)
    if groups.world_size > 1:
        dist.all_reduce(stats, group=groups.dp_group)
    model.train()
    val_loss = (stats[0] / stats[1].clamp(min=1)).item()
    if groups.world_size > 1 and not groups.is_main:
        # only rank 0 reports; release the eval communicators elsewhere
        dist.destroy_process_group()  # ruleid: MLS307
    return {"val/loss": val_loss, "val/ppl": math.exp(min(val_loss, 20))}


def pipeline_step(model, stage, batch, groups, args, accum_scale, autocast):
    """Forward/backward of one micro-batch through this rank's pipeline stage."""
    span = groups.ep_size * groups.dp_size
    ids = batch["input_ids"].cuda(non_blocking=True)
    labels = batch["labels"].cuda(non_blocking=True)
    shape = (ids.size(0), ids.size(1), model.cfg.d_model)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    with autocast():
        if groups.pp_rank == 0:
            h_in = model.embed(ids)
        else:
            h_in = torch.empty(shape, device=ids.device, dtype=dtype)
            dist.recv(h_in, src=groups.rank - span)
            h_in.requires_grad_(True)
        h = stage(h_in, model.rope_cos, model.rope_sin)
        aux, z = model.aux_losses()
        reg = args.aux_coef * aux + args.z_coef * z
        if groups.is_last_stage:
            logits = model.lm_head(model.norm(h))
            lm_loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.view(-1))
            loss = (lm_loss + reg) * accum_scale  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
        else:
            lm_loss = torch.zeros((), device=ids.device)
            dist.send(h.detach().to(dtype), dst=groups.rank + span)
            grad = torch.empty_like(h)
            dist.recv(grad, src=groups.rank + span)
            torch.autograd.backward([h, reg * accum_scale], [grad, None])
    if groups.pp_rank > 0:
        dist.send(h_in.grad.contiguous(), dst=groups.rank - span)
    return lm_loss.detach(), aux.detach()


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    groups = init_distributed(args.ep_size, args.pp_size)
    if not groups.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    torch.manual_seed(args.seed + groups.pp_rank)
    enable_fused_kernels()
    cfg = build_config(args)

    model = MoETransformer(cfg, ep_group=groups.ep_group).cuda()
    stage = split_into_stages(model, args.pp_size)[groups.pp_rank]
    attach_pipeline_hooks(stage, groups)
    optimizer = build_optimizer(model, args)
    scheduler = build_scheduler(optimizer, args)
    shard_optimizer_updates(optimizer, groups)
    ema = EMACallback(decay=args.ema_decay)

    step, consumed = load_checkpoint(args, model, optimizer, scheduler, ema, groups)
    data_cfg = DataConfig(args.train_prefix, args.val_prefix, args.seq_len, args.micro_batch_size)
    train_loader, val_loader, sampler = build_dataloaders(
        data_cfg, groups.rank % (groups.dp_size * groups.ep_size),
        groups.dp_size * groups.ep_size, args.seed, consumed)
    batches = infinite_batches(train_loader, sampler)

    global_batch = args.micro_batch_size * args.grad_accum * groups.dp_size * groups.ep_size
    callbacks = CallbackList([
        ema,
        LossSpikeCallback(),
        RouterStatsCallback(),
        HangWatchdogCallback(),
        HeartbeatCallback(args.heartbeat_dir, groups.rank),
        PowerSmoothingCallback(groups.local_rank),
    ])
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if args.bf16 else nullcontext
    straggler = StragglerDetector()
    params = [p for p in model.parameters() if p.requires_grad]

    trainer = SimpleNamespace(model=model, optimizer=optimizer, scheduler=scheduler)
    callbacks.on_train_start(trainer)
    model.train()

    while step < args.max_steps:
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        lm_total, aux_total = 0.0, 0.0
        for _ in range(args.grad_accum):
            batch = next(batches)
            lm, aux = pipeline_step(model, stage, batch, groups, args, 1.0 / args.grad_accum, autocast)
            lm_total += lm.item() / args.grad_accum
            aux_total += aux.item() / args.grad_accum

        if step >= args.router_freeze_step:
            for layer in model.moe_layers():
                layer.router.gate.weight.requires_grad_(False)  # todoruleid: family 2 (missed)

        allreduce_gradients(model, groups)
        if args.grad_noise > 0:
            sigma = math.sqrt(args.grad_noise / (1 + step) ** 0.55)
            for p in params:
                if p.grad is not None:
                    p.grad.add_(torch.randn_like(p.grad), alpha=sigma)  # ruleid: MLS302
        if groups.pp_size == 1:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        else:
            grad_norm = global_grad_norm(params, groups)
            torch.nn.utils.clip_grads_with_norm_(params, args.clip, grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step()
        scheduler.step()
        step += 1
        consumed += global_batch

        dt = time.perf_counter() - t0
        metrics = {
            "loss": lm_total,
            "aux_loss": aux_total,
            "grad_norm": float(grad_norm),
            "lr": scheduler.get_last_lr()[0],
            "step_time": dt,
        }
        callbacks.on_step_end(trainer, step, metrics)
        if groups.is_main and step % 10 == 0:
            logger.info("step %d | %s", step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

        if step % args.eval_every == 0:
            eval_metrics = evaluate(model, val_loader, groups, args.eval_batches, autocast)
            callbacks.on_eval_end(trainer, step, eval_metrics)
            if groups.is_main:
                logger.info("eval step %d | %s", step, json.dumps(eval_metrics))
        if step % args.save_every == 0:
            save_checkpoint(args, cfg, model, optimizer, scheduler, ema, step, consumed, groups)
        straggler.update(time.perf_counter() - t0)
        if consumed * args.seq_len >= args.token_budget / groups.world_size:
            logger.info("token budget reached at step %d", step)
            raise SystemExit(0)  # todoruleid: family 3 (missed)

    save_checkpoint(args, cfg, model, optimizer, scheduler, ema, step, consumed, groups)
    callbacks.on_train_end(trainer)
    cleanup(groups)


if __name__ == "__main__":
    main()
