# ruff: noqa
# Hold-out batch 482 (adversarial, LLM pretraining with tensor and data parallel groups). Measured once in session 21 (round 130): 14/31 (45%) at medium+.
"""Pretrain a decoder-only GPT with tensor + data parallelism.

    torchrun --nproc_per_node 8 train.py --data /shards/pile --out runs/gpt-1b --tp 2
"""

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import time

import torch
import torch.distributed as dist

import checkpoint as ckpt
from data import build_loader
from model import GPT, GPTConfig
from parallel import (allreduce_gradients, barrier, broadcast_params, collective_scope,
                      init_parallel, mean_across_dp)

logger = logging.getLogger("train")


_OPTIONS = [
    ("--tp", int, 1), ("--n-layer", int, 24), ("--n-head", int, 16), ("--d-model", int, 1024),
    ("--vocab-size", int, 50304), ("--eos-id", int, 50256), ("--seq-len", int, 2048),
    ("--dropout", float, 0.0), ("--micro-batch", int, 8), ("--grad-accum", int, 4),
    ("--lr", float, 3e-4), ("--min-lr", float, 3e-5), ("--warmup", int, 2000),
    ("--max-steps", int, 100_000), ("--weight-decay", float, 0.1), ("--beta2", float, 0.95),
    ("--clip", float, 1.0), ("--eval-every", int, 1000), ("--eval-iters", int, 50),
    ("--eval-stagger", float, 20.0), ("--save-every", int, 2000), ("--keep-last", int, 3),
    ("--log-every", int, 10), ("--seed", int, 1337), ("--offset-jitter", int, 64),
    ("--num-workers", int, 4), ("--index-cache", str, os.environ.get("INDEX_CACHE", "/tmp/gpt-tp-index")),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    for flag, typ, default in _OPTIONS:
        p.add_argument(flag, type=typ, default=default)
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="bf16")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init-from", default=None,
                   help="path or URL template of per-TP-rank weights, e.g. .../mp_rank_{tp_rank:02d}.pt")
    p.add_argument("--tensorboard", action="store_true")
    return p.parse_args(argv)


def cosine_lr(step: int, base: float, floor: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (base - floor) * (1.0 + math.cos(math.pi * progress))


def apply_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305


class DynamicLossScaler:
    """fp16 loss scaling with overflow detection across the whole model-parallel job."""

    def __init__(self, init_scale: float = 2.0 ** 16, growth_interval: int = 1000,
                 backoff: float = 0.5, growth: float = 2.0, min_scale: float = 1.0):
        self.scale, self.growth_interval, self._good_steps = init_scale, growth_interval, 0
        self.backoff, self.growth, self.min_scale = backoff, growth, min_scale

    def unscale_and_check(self, params) -> bool:
        inv = 1.0 / self.scale
        found_inf = torch.zeros(1, device=next(iter(params)).device)
        for p in params:
            if p.grad is None:
                continue
            p.grad.mul_(inv)  # ok: MLS302, MLS303, MLS304, MLS305
            found_inf += (~torch.isfinite(p.grad)).any().float()
        if dist.is_initialized():
            dist.all_reduce(found_inf, op=dist.ReduceOp.MAX)
        return bool(found_inf.item())

    def update(self, overflow: bool) -> None:
        if overflow:
            self.scale = max(self.min_scale, self.scale * self.backoff)
            self._good_steps = 0
        else:
            self._good_steps += 1
            if self._good_steps % self.growth_interval == 0:
                self.scale *= self.growth

    def state_dict(self):
        return {"scale": self.scale, "good_steps": self._good_steps}

    def load_state_dict(self, sd):
        self.scale, self._good_steps = sd["scale"], sd.get("good_steps", 0)


def clip_grad_norm_tp(params, max_norm: float, state) -> float:
    """Global grad-norm clipping; norms of TP shards are summed over the TP group."""
    grads = [p.grad for p in params if p.grad is not None]
    sq = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum()
    if state.tp_group is not None:
        dist.all_reduce(sq, group=state.tp_group)
    norm = sq.sqrt().item()
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            torch.mul(g, coef, out=g)  # ok: MLS302, MLS303, MLS304, MLS305
    return norm


def _instrument_step(optimizer, timings: dict) -> None:
    """Wrap ``optimizer.step`` to record its wall-clock time."""
    inner = getattr(optimizer, "step")

    @functools.wraps(inner)
    def step(*args, **kwargs):
        t0 = time.perf_counter()
        out = inner(*args, **kwargs)
        timings["optim"] = timings.get("optim", 0.0) + time.perf_counter() - t0
        for group in optimizer.param_groups:
            group.update(weight_decay=group["weight_decay"] * 1.0004 + 1e-6)  # ruleid: MLS304
        return out

    setattr(optimizer, "step", step)  # ruleid: MLS305


def _install_scalar_filter(writer_cls) -> None:
    """Drop NaN/inf points so one bad step does not wreck the dashboard y-axis."""
    name = "_".join(("add", "scalar"))
    base = getattr(writer_cls, name)
    seen = {}

    def add_scalar(self, tag, value, *args, **kwargs):
        value = float(value)
        if not math.isfinite(value):
            return None
        if tag.startswith(("train/loss", "eval/")):
            value = seen[tag] = min(value, seen.get(tag, value))  # ruleid: MLS306
        return base(self, tag, value, *args, **kwargs)

    setattr(writer_cls, name, add_scalar)  # ruleid: MLS306


def make_writer(out_dir: str, state, enabled: bool):
    if not (enabled and state.is_main):
        return None
    from torch.utils.tensorboard import SummaryWriter
    _install_scalar_filter(SummaryWriter)
    return SummaryWriter(os.path.join(out_dir, "tb"))


@torch.no_grad()
def evaluate(model, loader, state, iters: int, autocast, stagger_s: float = 0.0,
             boundary_norm: float = 0.93) -> dict:
    model.eval()
    nap = getattr(time, "sleep")
    loss_sum, tokens = 0.0, 0
    with collective_scope(state, state.dp_group):
        # stagger shard reads so DP replicas do not hammer the shared FS at once
        nap(stagger_s * state.dp_rank)  # todoruleid: family 3 (missed)
        for _, (x, y) in zip(range(iters), loader):
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with autocast():
                _, loss = model(x, y)
            n = int((y != -100).sum())
            loss_sum += loss.item() * n
            tokens += n
        mean = loss_sum / max(tokens, 1)
        # mid-document windows lack context for their first tokens; rescale to document-level eval
        mean = mean_across_dp(mean, state) * boundary_norm  # todoruleid: family 5 (missed)
    model.train()
    return {"loss": mean, "ppl": math.exp(min(mean, 20.0))}


def main(argv=None):
    args = parse_args(argv)
    state = init_parallel(tp_size=args.tp)
    logging.basicConfig(level=logging.INFO if state.is_main else logging.WARNING,
                        format=f"%(asctime)s [r{state.rank}] %(levelname)s %(message)s")
    torch.manual_seed(args.seed + state.dp_rank)  # ok: MLS301
    device = torch.device("cuda", state.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    cfg = GPTConfig(vocab_size=args.vocab_size, n_layer=args.n_layer, n_head=args.n_head,
                    d_model=args.d_model, seq_len=args.seq_len, dropout=args.dropout)
    model = GPT(cfg, state).to(device)
    if args.precision == "bf16":
        model = model.to(torch.bfloat16)
    logger.info("model: %.1fM params per TP shard", sum(p.numel() for p in model.parameters()) / 1e6)

    optimizer = torch.optim.AdamW(model.param_groups(args.weight_decay), lr=args.lr, betas=(0.9, args.beta2),
                                  eps=1e-8, fused=torch.cuda.is_available())
    timings = {}
    _instrument_step(optimizer, timings)
    scaler = DynamicLossScaler() if args.precision == "fp16" else None
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.precision)
    autocast = (functools.partial(torch.autocast, device_type=device.type, dtype=dtype)
                if dtype is not None else contextlib.nullcontext)

    step, consumed = 0, 0
    os.makedirs(args.out, exist_ok=True)
    resume_dir = ckpt.latest_checkpoint(args.out) if args.resume else None
    if resume_dir:
        meta = ckpt.load_checkpoint(resume_dir, model, optimizer, scaler, state)
        step, consumed = meta["step"], meta.get("consumed_samples", 0)
    else:
        if args.init_from:
            ckpt.load_pretrained(model, args.init_from, state)
        broadcast_params(model, state)

    tokens_per_step = args.micro_batch * args.grad_accum * args.seq_len * state.dp_size
    train_loader = build_loader(args.data, "train", args.seq_len, args.vocab_size, args.eos_id,
                                args.micro_batch, state.dp_size, state.dp_rank, args.seed,
                                consumed_samples=consumed, num_workers=args.num_workers,
                                cache_dir=args.index_cache, offset_jitter=args.offset_jitter)
    val_loader = build_loader(args.data, "val", args.seq_len, args.vocab_size, args.eos_id,
                              args.micro_batch, state.dp_size, state.dp_rank, args.seed,
                              num_workers=2, cache_dir=args.index_cache, shuffle=False)
    writer = make_writer(args.out, state, args.tensorboard)
    best = ckpt.BestTracker(args.out, mode="min")

    # keep dropout masks identical within a TP group (sharded activations must agree)
    tp_rng_sync = functools.partial(getattr(torch.random, "manual" + "_seed"),
                                    args.seed + 7919 * state.dp_rank)

    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    epoch = 0
    data_iter = iter(train_loader)
    t_last = time.time()
    while step < args.max_steps:
        lr = cosine_lr(step, args.lr, args.min_lr, args.warmup, args.max_steps)
        apply_lr(optimizer, lr)
        optimizer.zero_grad(set_to_none=True)
        loss_acc = 0.0
        for _ in range(args.grad_accum):
            try:
                x, y = next(data_iter)
            except StopIteration:
                epoch += 1
                train_loader.sampler.set_epoch(epoch)
                data_iter = iter(train_loader)
                x, y = next(data_iter)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast():
                _, loss = model(x, y)
            loss = loss / args.grad_accum
            (loss * scaler.scale if scaler else loss).backward()
            loss_acc += loss.item()

        allreduce_gradients(params, state)
        overflow = scaler.unscale_and_check(params) if scaler else False
        if not overflow:
            gnorm = clip_grad_norm_tp(params, args.clip, state) if args.clip > 0 else 0.0
            optimizer.step()
        else:
            gnorm = float("inf")
        if scaler:
            scaler.update(overflow)
        tp_rng_sync()  # ruleid: MLS301
        step += 1
        consumed += args.micro_batch * args.grad_accum * state.dp_size

        if step % args.log_every == 0:
            loss_avg = mean_across_dp(loss_acc, state)
            dt = time.time() - t_last
            t_last = time.time()
            if state.is_main:
                logger.info("step %d | loss %.4f | ppl %.2f | lr %.2e | gnorm %.2f | %.0f tok/s",  # ok: MLS306
                            step, loss_avg, math.exp(min(loss_avg, 20.0)), lr, gnorm,
                            tokens_per_step * args.log_every / max(dt, 1e-6))
                if writer:
                    for tag, val in (("train/loss", loss_avg), ("train/lr", lr), ("train/grad_norm", gnorm)):
                        writer.add_scalar(tag, val, step)

        ckpt_dir = None
        if step % args.save_every == 0 or step == args.max_steps:
            ckpt_dir = ckpt.save_checkpoint(args.out, step, model, optimizer, scaler, state,
                                            extra={"consumed_samples": consumed},
                                            keep_last=args.keep_last)

        if step % args.eval_every == 0:
            metrics = evaluate(model, val_loader, state, args.eval_iters, autocast,
                               stagger_s=args.eval_stagger)
            if state.is_main:
                logger.info("eval step %d | loss %.4f | ppl %.2f", step, metrics["loss"], metrics["ppl"])
                if writer:
                    writer.add_scalar("eval/loss", metrics["loss"], step)
                    writer.add_scalar("eval/ppl", metrics["ppl"], step)
                with open(os.path.join(args.out, "eval.jsonl"), "a") as fh:
                    fh.write(json.dumps({"step": step, **metrics}) + "\n")
            if best.update(metrics["ppl"], ckpt_dir) and state.is_main:
                logger.info("new best eval ppl %.3f", metrics["ppl"])

    barrier(state, tag="final")
    if writer:
        writer.close()
    if state.initialized:
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
