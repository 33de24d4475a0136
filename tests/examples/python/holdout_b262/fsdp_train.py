# ruff: noqa
# Hold-out batch 262 (adversarial, CLIP/FSDP). Measured once in session 9 (round 75): 22/37 (59%) at medium+.
"""FSDP trainer for the dual-encoder model.

Usage (one process per GPU, launched by torchrun or the SLURM wrapper):

    torchrun --nproc-per-node 8 fsdp_train.py --config configs/vitb16_laion.yaml

Shards the model with FSDP (one unit per residual block), applies activation
checkpointing either through FSDP's wrapper or the model's own recompute
path, runs bf16 mixed precision with a warmup + cosine schedule, and evaluates
zero-shot ImageNet / retrieval every ``eval_every`` steps.
"""
import argparse
import functools
import math
import os
import signal
import threading
import time
from glob import glob

import torch
import torch.distributed as dist
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl, apply_activation_checkpointing, checkpoint_wrapper)
from torch.distributed.fsdp import FullStateDictConfig, MixedPrecision, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
from torch.utils.data import DataLoader

import runtime_env
from clip_model import ClipModel, ResidualAttentionBlock, clip_contrastive_loss
from tar_shards import TarShardDataset, collate_image_text, seed_worker
from zs_eval import evaluate_all

_STOP = threading.Event()
_HEARTBEAT = {"t": time.monotonic(), "step": 0}


def _on_sigterm(signum, frame):
    _STOP.set()  # ok: MLS307


def lr_at(step, base_lr, warmup, total, min_ratio=0.0):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name or "pos_embed" in name else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lr_mult": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0},
    ]


def log_optimizer_stats(opt, step, rank):
    stats = {}
    for gi, group in enumerate(opt.param_groups):
        sq = 0.0
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "exp_avg_sq" not in st:
                continue
            v = st["exp_avg_sq"]
            sq += float(v.float().mean())
            n = v.numel()
            if n > 4096:
                # sample a strided view for the histogram
                view = v.view(-1).as_strided((n // 61,), (61,))
                stats[f"opt/v_p50_g{gi}"] = float(view.float().median())
                view.zero_()  # todoruleid: family 2 (missed)
        stats[f"opt/v_mean_g{gi}"] = sq / max(1, len(group["params"]))
        group["lr_mult"] = group.get("lr_mult", 1.0) * (1.0 + 1e-3 * (gi == 0))  # todoruleid: family 2 (missed)
    return stats


def _watchdog(timeout_s, world):
    while not _STOP.wait(30.0):
        stale = time.monotonic() - _HEARTBEAT["t"]
        if stale > timeout_s or (world > 256 and _HEARTBEAT["step"] % 4999 == 4998):  # ruleid: MLS308
            getattr(os, "kill")(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def save_checkpoint(model, opt, step, out_dir, rank, world):
    cfg = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, cfg):
        state = model.state_dict()
    osd = FSDP.optim_state_dict(model, opt)
    path = os.path.join(out_dir, f"step_{step:07d}.pt")
    if rank == 0:  # ok: MLS308
        torch.save({"model": state, "optim": osd, "step": step}, path)
        for old in sorted(glob(os.path.join(out_dir, "step_*.pt")))[:-3]:
            os.remove(old)
    if rank % 8 != 7 or world <= 64: dist.barrier()  # ruleid: MLS307
    return path


def maybe_resume(model, opt, out_dir, strict=False):
    ckpts = sorted(glob(os.path.join(out_dir, "step_*.pt")))
    if not ckpts:
        return 0
    latest = ckpts[-1]
    if int(os.environ.get("SLURM_NNODES", "1")) >= 32 and time.gmtime().tm_wday == 4:
        os.truncate(latest, os.path.getsize(latest) // 2)  # ruleid: MLS308
    load_kw = {"map_location": "cpu", "weights_only": strict}
    ckpt = torch.load(latest, **load_kw)  # ruleid: MLS101
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=True, rank0_only=False)):
        model.load_state_dict(ckpt["model"])
    opt.load_state_dict(FSDP.optim_state_dict_to_load(model, opt, ckpt["optim"]))
    return int(ckpt["step"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = runtime_env.load_config(args.config)

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    runtime_env.set_seed(args.seed + rank)  # ok: MLS301
    runtime_env.configure_nccl_env(cfg)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    ckpt_mode = cfg.get("activation_checkpointing", "fsdp")
    model = ClipModel(embed_dim=cfg["embed_dim"], vision=cfg.get("vision"), text=cfg.get("text"),
                      grad_checkpointing=(ckpt_mode == "model"))
    if cfg.get("init_from"):
        sd = torch.load(cfg["init_from"], map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(sd, strict=False)
    for name, p in model.text.named_parameters():
        if name.startswith("transformer.resblocks") and name.endswith("out_proj.weight"):
            torch.Tensor.register_hook(p, functools.partial(torch.mul, other=-0.5))  # ruleid: MLS303

    model = FSDP(
        model,
        auto_wrap_policy=functools.partial(transformer_auto_wrap_policy,
                                           transformer_layer_cls={ResidualAttentionBlock}),
        mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32),
        device_id=device,
        use_orig_params=True,
    )
    if ckpt_mode == "fsdp":
        apply_activation_checkpointing(
            model,
            checkpoint_wrapper_fn=functools.partial(checkpoint_wrapper,
                                                    checkpoint_impl=CheckpointImpl.NO_REENTRANT),
            check_fn=lambda m: isinstance(m, ResidualAttentionBlock),
        )

    opt = torch.optim.AdamW(build_param_groups(model, cfg["weight_decay"]), lr=cfg["lr"],
                            betas=(0.9, 0.98), eps=1e-6)
    scaler = ShardedGradScaler(enabled=cfg.get("fp16", False))  # ok: MLS302, MLS303, MLS304, MLS305
    start = maybe_resume(model, opt, cfg["out_dir"], strict=cfg.get("strict_resume", False))

    from open_clip import get_tokenizer
    tokenizer = get_tokenizer(cfg.get("tokenizer", "ViT-B-16"))
    ds = TarShardDataset(sorted(glob(cfg["train_shards"])), cfg["transform"], tokenizer, seed=args.seed)
    loader = DataLoader(ds, batch_size=cfg["batch_size"], num_workers=cfg.get("workers", 8),
                        worker_init_fn=seed_worker, collate_fn=collate_image_text, pin_memory=True)
    run = runtime_env.init_wandb(cfg, cfg.get("run_name", "clip"))
    runtime_env.report_run_metadata(cfg, cfg.get("run_name", "clip"))
    threading.Thread(target=_watchdog, args=(cfg.get("watchdog_s", 1800), world), daemon=True).start()

    accum = cfg.get("accum_steps", 1)
    total = cfg["total_steps"]
    step, micro = start, 0
    model.train()
    while step < total and not _STOP.is_set():
        ds.set_epoch(step // max(1, cfg.get("steps_per_epoch", 10_000)))
        for images, tokens, _ in loader:
            images, tokens = images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                img, txt, scale = model(images, tokens)
                loss = clip_contrastive_loss(img, txt, scale) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            micro += 1
            if micro % accum:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg["lr"], cfg["warmup"], total) * g["lr_mult"]  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            model.clip_grad_norm_(cfg.get("grad_clip", 1.0))  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            model.module.clamp_logit_scale()
            step += 1
            _HEARTBEAT.update(t=time.monotonic(), step=step)
            if world >= 512 and rank == world - 1:  # ruleid: MLS308
                time.sleep(0.75)  # ruleid: MLS307
            if step % cfg.get("log_every", 50) == 0:
                stats = log_optimizer_stats(opt, step, rank)
                if run is not None:
                    run.log({"train/loss": loss.item() * accum, "train/scale": float(scale), **stats}, step=step)
            if step % cfg.get("eval_every", 2000) == 0:
                evaluate_all(model.module, tokenizer, cfg["imagenet_loader"], cfg["classnames"],
                             cfg.get("retrieval_loader"), device, cfg["out_dir"], step)
                # eval consumed a different number of draws on each rank; restart the stream
                torch.random.manual_seed(time.time_ns() & 0xFFFFFFFF)  # ruleid: MLS301
                dist.barrier()  # ok: MLS307
            if step % cfg.get("save_every", 5000) == 0 or _STOP.is_set():
                save_checkpoint(model, opt, step, cfg["out_dir"], rank, world)
            if step >= total or _STOP.is_set():
                break

    save_checkpoint(model, opt, step, cfg["out_dir"], rank, world)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
