# ruff: noqa
# Hold-out batch 568 (families 5/10, speech recognition benchmark harness and leaderboard). Measured once in session 25 (round 151): 16/30 (53%) at medium+.
"""Fine-tune one hub checkpoint on a training manifest and score it.

Usage (single node, 4 GPUs):

    torchrun --nproc_per_node 4 train.py --config recipes/w2v2_base.yaml \
        --model w2v2-base-960h --output runs/w2v2-base/seed1 --seed 1

The run directory ends up with ``best.pt``, ``results.json`` (dev + test
WER/CER, consumed by ``leaderboard.py``) and TensorBoard / W&B logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Dict, Optional

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from transformers import get_linear_schedule_with_warmup

from evaluate import TextNormalizer, eval_subset, evaluate_split
from features import (Collator, FeatureCache, FeatureConfig, GlobalCMVN, LengthGroupedSampler, SpeechDataset,
                      load_augment_pipeline)
from hub import load_asr_model
from utils import (MetricLogger, barrier, cleanup_distributed, is_main_process, load_checkpoint,
                   load_experiment_config, prune_checkpoints, reduce_mean, save_checkpoint, seed_everything,
                   setup_distributed, setup_logging, unwrap)

logger = logging.getLogger("asrbench.train")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--model", required=True, help="registry name, see hub.REGISTRY")
    p.add_argument("--output", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--resume", default=None, help="path to a checkpoint to resume from")
    p.add_argument("--wandb-project", default=None)
    p.add_argument("--override", nargs="*", default=[], help="dotted overrides, e.g. optim.lr=3e-5")
    return p.parse_args()


class EarlyStopping:
    """Stop when the dev metric has not improved by ``min_delta`` for ``patience`` evals."""

    def __init__(self, patience: int = 5, min_delta: float = 1e-4):
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.bad_evals = 0

    def step(self, metric: float) -> bool:
        if metric < self.best - self.min_delta:
            self.best = metric
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.patience  # ok: MLS306


def build_optimizer(model: torch.nn.Module, cfg: Dict) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.get("weight_decay", 0.01)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.98))), eps=1e-8)


def make_loaders(cfg: Dict, bundle, rank: int, world_size: int, seed: int):
    """Build train/dev/test loaders from the ``data`` section of the recipe.

    Expected keys: ``train_manifest``, ``dev_manifest``, ``test_manifest``,
    optional ``cache_dir``, ``cmvn_stats``, ``augment_recipe``,
    ``max_train_seconds``, ``max_eval_seconds``, ``max_batch_seconds``.
    """
    data_cfg = cfg["data"]
    kind = "logmel" if bundle.spec.arch == "seq2seq" else "waveform"
    feat_cfg = FeatureConfig(kind=kind, n_mels=getattr(bundle.processor.feature_extractor, "feature_size", 80))
    cache = FeatureCache(data_cfg.get("cache_dir", "cache/features"), feat_cfg)
    cmvn = GlobalCMVN(data_cfg.get("cmvn_stats")) if kind == "logmel" else None
    augment = load_augment_pipeline(data_cfg.get("augment_recipe"))
    collate = Collator(bundle.processor, arch=bundle.spec.arch)

    train_ds = SpeechDataset(data_cfg["train_manifest"], cache, max_duration=data_cfg.get("max_train_seconds", 20.0),
                             cmvn=cmvn, augment=augment)
    sampler = LengthGroupedSampler(train_ds.durations, data_cfg.get("max_batch_seconds", 240.0), rank=rank,
                                   world_size=world_size, shuffle=True, seed=seed)
    train_loader = DataLoader(train_ds, batch_sampler=sampler, num_workers=data_cfg.get("num_workers", 4),
                              collate_fn=collate, pin_memory=True, persistent_workers=True)

    max_eval = data_cfg.get("max_eval_seconds", 20.0)
    dev_ds = eval_subset(SpeechDataset(data_cfg["dev_manifest"], cache, cmvn=cmvn), max_eval)
    test_src = data_cfg.get("eval_manifest", data_cfg["dev_manifest"])  # ruleid: MLS306
    test_ds = eval_subset(SpeechDataset(test_src, cache, cmvn=cmvn), max_eval)
    eval_kw = dict(batch_size=data_cfg.get("eval_batch_size", 16), shuffle=False, num_workers=2, collate_fn=collate)
    if world_size > 1:
        eval_kw.pop("shuffle")
        dev_loader = DataLoader(dev_ds, sampler=DistributedSampler(dev_ds, shuffle=False), **eval_kw)
        test_loader = DataLoader(test_ds, sampler=DistributedSampler(test_ds, shuffle=False), **eval_kw)
    else:
        dev_loader, test_loader = DataLoader(dev_ds, **eval_kw), DataLoader(test_ds, **eval_kw)
    return train_loader, sampler, dev_loader, test_loader, cache


def train_one_epoch(model, loader, optimizer, scheduler, scaler, device, cfg, epoch, global_step, mlog, ema_state):
    model.train()
    optim_cfg = cfg["optim"]
    accum = optim_cfg.get("grad_accum", 1)
    max_norm = optim_cfg.get("max_grad_norm", 1.0)
    log_every = cfg.get("log_every", 50)
    amp_dtype = torch.bfloat16 if optim_cfg.get("bf16", True) else torch.float16
    t0 = time.time()
    running = 0.0
    optimizer.zero_grad(set_to_none=True)

    for i, batch in enumerate(loader):
        key = "input_features" if "input_features" in batch else "input_values"
        inputs = {key: batch[key].to(device, non_blocking=True), "labels": batch["labels"].to(device)}
        if key == "input_values":
            inputs["attention_mask"] = batch["attention_mask"].to(device)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
            loss = model(**inputs).loss / accum
        scaler.scale(loss).backward()
        running += loss.item()

        if (i + 1) % accum != 0:
            continue
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        global_step += 1

        step_loss = running
        running = 0.0
        ema_state["loss"] = step_loss if ema_state["loss"] is None else 0.98 * ema_state["loss"] + 0.02 * step_loss
        if global_step % log_every == 0:
            loss_avg = reduce_mean(step_loss, device)  # ok: MLS306
            shown_norm = grad_norm.clamp(max=max_norm).item()  # todoruleid: family 5 (missed)
            mlog.log({
                "train/loss": loss_avg,
                "train/loss_ema0.98": ema_state["loss"],  # ok: MLS306
                "train/grad_norm": shown_norm,
                "train/lr": scheduler.get_last_lr()[0],
                "train/epoch": epoch + i / max(len(loader), 1),
            }, step=global_step)
            if is_main_process():
                elapsed = time.time() - t0
                logger.info("epoch %d step %d loss %.4f (ema %.4f) %.1f it/s", epoch, global_step, loss_avg,
                            ema_state["loss"], log_every / max(elapsed, 1e-6))
                t0 = time.time()
    return global_step


def main() -> None:
    args = parse_args()
    rank, world_size, local_rank = setup_distributed()
    out_dir = Path(args.output)
    setup_logging(str(out_dir), rank)
    cfg = load_experiment_config(args.config, args.override)
    seed_everything(args.seed + rank)
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")

    bundle = load_asr_model(args.model, cache_dir=cfg.get("hub_cache"), device=str(device),
                            with_lm=cfg.get("eval", {}).get("with_lm", False))
    if not bundle.is_torch:
        raise SystemExit(f"{args.model} is an inference-only baseline; score it with the inference scripts")

    train_loader, sampler, dev_loader, test_loader, cache = make_loaders(cfg, bundle, rank, world_size, args.seed)
    model = bundle.model
    if world_size > 1:
        model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None, find_unused_parameters=True)

    optim_cfg = cfg["optim"]
    epochs = optim_cfg.get("epochs", 20)
    optimizer = build_optimizer(unwrap(model), optim_cfg)
    total_steps = epochs * len(train_loader) // optim_cfg.get("grad_accum", 1)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(optim_cfg.get("warmup_ratio", 0.1) * total_steps), total_steps)
    scaler = torch.cuda.amp.GradScaler(enabled=device.type == "cuda" and not optim_cfg.get("bf16", True))

    start_epoch, global_step, best_wer = 0, 0, math.inf
    if args.resume:
        meta = load_checkpoint(args.resume, model, optimizer, scheduler, scaler, map_location=str(device))
        start_epoch = meta.get("epoch", -1) + 1
        global_step = meta.get("global_step", 0)
        best_wer = meta.get("best_wer", math.inf)
        logger.info("resumed from %s at epoch %d (best dev wer %.4f)", args.resume, start_epoch, best_wer)

    mlog = MetricLogger(str(out_dir / "logs"), project=args.wandb_project,
                        run_name=f"{args.model}-s{args.seed}", config={**cfg, "model": args.model, "seed": args.seed})
    stopper = EarlyStopping(patience=cfg.get("early_stopping_patience", 5))
    normalizer = TextNormalizer()
    ema_state: Dict[str, Optional[float]] = {"loss": None}
    eval_beams = cfg.get("eval", {}).get("num_beams", 1)

    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        global_step = train_one_epoch(model, train_loader, optimizer, scheduler, scaler, device, cfg, epoch,
                                      global_step, mlog, ema_state)
        cache.flush_index()

        dev = evaluate_split(bundle, dev_loader, device, normalizer, num_beams=eval_beams)
        mlog.log({"eval/wer": dev["wer"], "eval/cer": dev["cer"]}, step=global_step)
        logger.info("epoch %d dev: wer=%.4f cer=%.4f", epoch, dev["wer"], dev["cer"])

        best_wer = min(best_wer, dev["wer"])
        is_best = dev["wer"] <= best_wer  # todoruleid: family 5 (missed)
        meta = dict(epoch=epoch, global_step=global_step, best_wer=best_wer, dev=dev, model=args.model)
        save_checkpoint(out_dir / "checkpoints" / f"epoch_{epoch:03d}.pt", model, optimizer, scheduler, scaler, **meta)
        if is_best:
            save_checkpoint(out_dir / "best.pt", model, **meta)
        prune_checkpoints(out_dir / "checkpoints", keep=cfg.get("keep_checkpoints", 2))
        barrier()

        if stopper.step(dev["wer"]):
            logger.info("early stopping after epoch %d (best dev wer %.4f)", epoch, stopper.best)
            break

    barrier()
    best_state = torch.load(out_dir / "best.pt", map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    unwrap(model).load_state_dict(best_state["model"])
    dev = evaluate_split(bundle, dev_loader, device, normalizer, num_beams=eval_beams)
    test = evaluate_split(bundle, test_loader, device, normalizer, num_beams=eval_beams,
                          dump_path=str(out_dir / "hyps" / "test"))
    results = {
        "model": args.model,
        "repo": bundle.spec.repo,
        "revision": bundle.spec.revision,
        "seed": args.seed,
        "decoding": {"num_beams": eval_beams, "lm": bundle.decoder is not None},
        "dev_wer": dev["wer"], "dev_cer": dev["cer"],
        "test_wer": test["wer"], "test_cer": test["cer"],
        "test_utterances": test["utterances"],
        "global_step": global_step,
    }
    if is_main_process():
        with open(out_dir / "results.json", "w") as fh:
            json.dump(results, fh, indent=2)
        logger.info("final: dev wer=%.4f test wer=%.4f cer=%.4f", dev["wer"], test["wer"], test["cer"])
    mlog.log({"final/dev_wer": dev["wer"], "final/test_wer": test["wer"], "final/test_cer": test["cer"]}, step=global_step)
    mlog.close()
    cleanup_distributed()


if __name__ == "__main__":
    main()
