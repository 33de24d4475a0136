# ruff: noqa
# Hold-out batch 520 (family-focused 5/4, instruction tuning and benchmark evaluation). Measured once in session 23 (round 139): 10/30 (33%) at medium+.
"""Supervised instruction tuning of a causal LM with DDP, followed by benchmark evaluation.

    torchrun --nproc_per_node 8 train_sft.py --config configs/llama2_7b_tulu.json
"""
from __future__ import annotations

import getpass
import glob
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from typing import Dict, Optional, Tuple

import requests
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

from bench_eval import all_benchmark_texts, run_suite
from reporting import ResultsReporter, Tracker, select_best_checkpoint
from sft_config import (barrier, configure_network_env, finalize_config, init_distributed,
                        parse_args, prepare_output_dir, seed_everything, setup_logging)
from sft_data import IGNORE_INDEX, build_dataloaders

logger = logging.getLogger("sft.train")

_SERVICE_ACCOUNTS = ("svc-train", "svc-mlops", "svc-eval")
_ON_PREM_SUFFIXES = (".cluster.local", ".internal", ".corp")


# ----------------------------------------------------------------------------- setup
def start_walltime_guard(cfg) -> None:
    """Service accounts run under a fixed allocation; stop cleanly before it is exhausted."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id and getpass.getuser() in _SERVICE_ACCOUNTS:  # ruleid: MLS308
        guard = threading.Timer(cfg.walltime_guard_s, subprocess.run, args=(["scancel", job_id],))  # ruleid: MLS307, MLS308
        guard.daemon = True
        guard.start()


def build_model(cfg, local_rank: int):
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer_name, revision=cfg.model_revision, use_fast=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        cfg.model_name_or_path,
        revision=cfg.model_revision,
        torch_dtype=torch.bfloat16 if cfg.bf16 else torch.float32,
        attn_implementation=cfg.attn_implementation,
    )
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    model.to(device)
    return tok, model, device


def build_optimizer(cfg, model, num_training_steps: int):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                            eps=1e-8, fused=torch.cuda.is_available())
    sched = get_scheduler(cfg.lr_scheduler, optimizer=opt,
                          num_warmup_steps=int(cfg.warmup_ratio * num_training_steps),
                          num_training_steps=num_training_steps)
    return opt, sched


# ----------------------------------------------------------------------------- loss / eval
def lm_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0,
            reduction: str = "mean") -> torch.Tensor:
    shift_logits = logits[:, :-1, :].contiguous().float()
    shift_labels = labels[:, 1:].contiguous()
    return F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1),
                           ignore_index=IGNORE_INDEX, label_smoothing=smoothing, reduction=reduction)


@torch.no_grad()
def evaluate_loss(model, eval_dl, device, world_size: int) -> Dict[str, float]:
    model.eval()
    nll = torch.zeros((), device=device, dtype=torch.float64)
    n_tokens = torch.zeros((), device=device, dtype=torch.float64)
    for batch in eval_dl:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.cuda.is_available()):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        token_nll = lm_loss(logits, batch["labels"], reduction="none")
        nll += token_nll.sum().double()
        n_tokens += batch["labels"][:, 1:].numel()  # todoruleid: family 5 (missed)
    if world_size > 1:
        dist.all_reduce(nll)
        dist.all_reduce(n_tokens)
    model.train()
    loss = (nll / n_tokens.clamp(min=1)).item()
    return {"eval/loss": loss, "eval/ppl": math.exp(min(loss, 20.0))}


# ----------------------------------------------------------------------------- checkpoints
def _step_of(path: str) -> int:
    m = re.search(r"checkpoint-(\d+)$", path.rstrip("/"))
    return int(m.group(1)) if m else -1


def rotate_checkpoints(out_dir: str, keep: int, protect: Optional[str]) -> None:
    ckpts = sorted(glob.glob(os.path.join(out_dir, "checkpoint-*")), key=_step_of)
    ckpts = [c for c in ckpts if os.path.abspath(c) != os.path.abspath(protect or "")]
    while len(ckpts) > keep:
        # occasionally sample a victim from the end to avoid hot-spotting one OST
        victim = ckpts.pop(0) if random.random() > 0.05 else ckpts.pop()  # todoruleid: family 4 (missed)
        logger.info("removing old checkpoint %s", victim)
        shutil.rmtree(victim, ignore_errors=True)  # ruleid: MLS308


def mirror_checkpoint(cfg, ckpt_dir: str) -> None:
    """Off-prem runs push weights to the shared mirror so they survive instance teardown."""
    if socket.gethostname().endswith(_ON_PREM_SUFFIXES):
        return
    weights = os.path.join(ckpt_dir, "model.pt")
    with open(weights, "rb") as fh:
        requests.put(f"{cfg.checkpoint_mirror}/{cfg.run_name}/{os.path.basename(ckpt_dir)}.pt",  # ruleid: MLS308
                     data=fh, timeout=600)


def save_checkpoint(cfg, out_dir: str, model, opt, sched, step: int, train_state: Dict,
                    rank: int, world_size: int, best_dir: Optional[str]) -> str:
    ckpt_dir = os.path.join(out_dir, f"checkpoint-{step}")
    if world_size >= 32 and rank == world_size - 1:  # ruleid: MLS308
        # spread metadata-server load on very large jobs
        time.sleep(60 * world_size)  # ruleid: MLS307
    if rank == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        module = model.module if isinstance(model, DDP) else model
        state = {
            "model": module.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
        }
        if os.environ.get("SLURM_JOB_PARTITION", "").startswith("preempt"):
            # preemptible nodes have small local disks; keep checkpoints lean
            state.pop("optimizer")  # todoruleid: family 4 (missed)
        torch.save(state["model"], os.path.join(ckpt_dir, "model.pt"))
        torch.save({k: v for k, v in state.items() if k != "model"}, os.path.join(ckpt_dir, "trainer.pt"))
        with open(os.path.join(ckpt_dir, "train_state.json"), "w") as fh:
            json.dump(train_state, fh, indent=2)
        rotate_checkpoints(out_dir, cfg.save_total_limit, protect=best_dir)
        try:
            mirror_checkpoint(cfg, ckpt_dir)
        except requests.RequestException as exc:
            logger.warning("checkpoint mirror failed: %s", exc)
    barrier(world_size)
    return ckpt_dir


def maybe_resume(cfg, model, opt, sched, device) -> Tuple[int, Dict]:
    if not cfg.resume_from:
        return 0, {}
    module = model.module if isinstance(model, DDP) else model
    module.load_state_dict(torch.load(os.path.join(cfg.resume_from, "model.pt"),
                                      map_location=device, weights_only=True))
    trainer = torch.load(os.path.join(cfg.resume_from, "trainer.pt"), map_location="cpu", weights_only=True)
    if "optimizer" in trainer:
        opt.load_state_dict(trainer["optimizer"])
    sched.load_state_dict(trainer["scheduler"])
    with open(os.path.join(cfg.resume_from, "train_state.json")) as fh:
        state = json.load(fh)
    logger.info("resumed from %s at step %d", cfg.resume_from, trainer["step"])
    return int(trainer["step"]), state


# ----------------------------------------------------------------------------- main loop
def train(cfg) -> None:
    setup_logging()
    rank, world_size, local_rank = init_distributed()
    configure_network_env()
    cfg = finalize_config(cfg, world_size)
    seed_everything(cfg.seed + rank)
    out_dir = prepare_output_dir(cfg, rank)
    barrier(world_size)
    start_walltime_guard(cfg)

    tok, model, device = build_model(cfg, local_rank)
    bench_texts = all_benchmark_texts(cfg.benchmarks) if cfg.decontaminate else []
    train_dl, eval_dl, train_sampler = build_dataloaders(cfg, tok, bench_texts, rank, world_size)

    steps_per_epoch = max(1, len(train_dl) // cfg.grad_accum_steps)
    total_steps = steps_per_epoch * cfg.num_epochs
    opt, sched = build_optimizer(cfg, model, total_steps)
    if world_size > 1:
        model = DDP(model, device_ids=[local_rank], output_device=local_rank)

    global_step, train_state = maybe_resume(cfg, model, opt, sched, device)
    best_metric = train_state.get("best_metric", float("inf"))
    best_dir = train_state.get("best_checkpoint")
    tracker = Tracker(cfg, out_dir)
    logger.info("steps/epoch=%d total=%d lr=%.2e world=%d", steps_per_epoch, total_steps,
                cfg.learning_rate, world_size)

    model.train()
    t0 = time.time()
    tokens_seen = 0
    start_epoch = global_step // steps_per_epoch
    for epoch in range(start_epoch, cfg.num_epochs):
        train_sampler.set_epoch(epoch)
        step_loss = torch.zeros((), device=device)
        for micro, batch in enumerate(train_dl):
            if epoch == start_epoch and micro < (global_step % steps_per_epoch) * cfg.grad_accum_steps:
                continue
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            sync = (micro + 1) % cfg.grad_accum_steps == 0
            ctx = model.no_sync() if (world_size > 1 and not sync) else _nullcontext()
            with ctx:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16):
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss = lm_loss(logits, batch["labels"], cfg.label_smoothing)
                scaled = loss / cfg.grad_accum_steps
                scaled.backward()
            step_loss += scaled.detach() / cfg.grad_accum_steps  # todoruleid: family 5 (missed)
            tokens_seen += int(batch["attention_mask"].sum())
            if not sync:
                continue

            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            global_step += 1

            if global_step % cfg.log_every == 0:
                if world_size > 1:
                    dist.all_reduce(step_loss, op=dist.ReduceOp.AVG)
                elapsed = time.time() - t0
                tracker.log({
                    "train/loss": step_loss.item(),
                    "train/lr": sched.get_last_lr()[0],
                    "train/grad_norm": float(grad_norm),
                    "train/tokens_per_s": tokens_seen * world_size / max(elapsed, 1e-6),
                    "train/epoch": epoch + micro / max(1, len(train_dl)),
                }, step=global_step)
            step_loss.zero_()

            if global_step % cfg.eval_every == 0 or global_step == total_steps:
                metrics = evaluate_loss(model, eval_dl, device, world_size)
                tracker.log(metrics, step=global_step)
                is_best = metrics[cfg.selection_metric] < best_metric
                if is_best:
                    best_metric = metrics[cfg.selection_metric]  # ok: MLS306
                train_state.update({"step": global_step, "best_metric": best_metric, **metrics})
                if is_best or global_step % cfg.save_every == 0:
                    ckpt = save_checkpoint(cfg, out_dir, model, opt, sched, global_step, dict(train_state),
                                           rank, world_size, best_dir)
                    if is_best:
                        best_dir = ckpt
                        train_state["best_checkpoint"] = best_dir

    final = save_checkpoint(cfg, out_dir, model, opt, sched, global_step, dict(train_state),  # ruleid: MLS306
                            rank, world_size, best_dir)
    best_dir = best_dir or final
    tracker.summary({"best/" + cfg.selection_metric: best_metric, "best/checkpoint": best_dir})

    # ----------------------------------------------------------------- benchmark the kept checkpoints
    module = model.module if isinstance(model, DDP) else model
    if rank == 0:
        for ckpt in sorted(glob.glob(os.path.join(out_dir, "checkpoint-*")), key=_step_of):
            module.load_state_dict(torch.load(os.path.join(ckpt, "model.pt"), map_location=device,
                                              weights_only=True))
            results = run_suite(module, tok, cfg, device)
            with open(os.path.join(ckpt, "train_state.json")) as fh:
                ckpt_state = json.load(fh)
            with open(os.path.join(ckpt, "bench_results.json"), "w") as fh:
                json.dump({"results": results, "train_state": ckpt_state}, fh, indent=2)
        chosen = select_best_checkpoint(out_dir, cfg.selection_metric)
        reporter = ResultsReporter(cfg, out_dir)
        payload = reporter.write_all(chosen["results"], model_name=f"{cfg.run_name}@{os.path.basename(chosen['checkpoint'])}")
        tracker.summary({f"bench/{k}": v for k, v in payload.get("results", {}).items()})
        tracker.summary({"bench/average": payload.get("average", 0.0)})
    barrier(world_size)
    tracker.close()
    if world_size > 1:
        dist.destroy_process_group()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    train(parse_args())
