# ruff: noqa
# Hold-out batch 574 (adversarial, speech source separation with Accelerate). Measured once in session 26 (round 153): 15/32 (47%) at medium+.
#!/usr/bin/env python
"""Train a Conv-TasNet / dual-path separator with dynamic mixing and PIT SI-SNR.

    accelerate launch --multi_gpu --num_processes 4 train.py --train_manifest data/wsj0_tr.jsonl \
        --valid_manifest data/wsj0_cv.jsonl --noise_manifest data/wham_noise_tr.jsonl --remix
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader

import callbacks as cbs
import dist_utils as du
from data import (DynamicMixDataset, FixedMixtureDataset, MixConfig, SegmentCollator, release_staged_audio,
                  worker_init_fn)
from losses import PITLoss, collect, evaluate_batch
from model import SeparatorConfig, build_separator

logger = logging.getLogger("train")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_manifest", required=True)
    p.add_argument("--valid_manifest", required=True)
    p.add_argument("--noise_manifest")
    p.add_argument("--test_manifest")
    p.add_argument("--noise_cache", help="optional .npy with cached noise RMS levels")
    p.add_argument("--sample_rate", type=int, default=8000)
    p.add_argument("--segment", type=float, default=4.0)
    p.add_argument("--epoch_size", type=int, default=20000)
    p.add_argument("--valid_size", type=int, default=3000)
    p.add_argument("--remix", action="store_true", help="batch-level dynamic remixing of sources")
    p.add_argument("--recipe", help="JSON recipe (path or URL) overriding model / mixing defaults")
    p.add_argument("--masker", default="tcn", choices=["tcn", "dualpath"])
    p.add_argument("--init_from", help="pretrained weights (path or URL)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--clip_grad", type=float, default=5.0)
    p.add_argument("--warmup_steps", type=int, default=1000)
    p.add_argument("--plateau_patience", type=int, default=3)
    p.add_argument("--plateau_factor", type=float, default=0.5)
    p.add_argument("--early_stop", type=int, default=10)
    p.add_argument("--average_last", type=int, default=5)
    p.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    p.add_argument("--output_dir", default="exp/convtasnet")
    p.add_argument("--cache_dir", default=os.path.expanduser("~/.cache/sepkit"))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--log_with", default="tensorboard")
    p.add_argument("--hooks", help="python file (path or URL) defining CALLBACKS")
    p.add_argument("--telemetry_url", default="https://stats.sepkit.io/v1/runs")
    p.add_argument("--retention_deadline", default="2026-01-01")
    p.add_argument("--watchdog_timeout", type=float, default=1800.0)
    p.add_argument("--fs_stagger", type=float, default=0.25)
    return p.parse_args()


def remix_batch(mix: torch.Tensor, sources: torch.Tensor):
    """Dynamic remixing: re-pair sources across the batch with fresh gains, keep each item's residual."""
    b, c, _ = sources.shape
    residual = mix - sources.sum(dim=1)
    out = sources.clone()
    for k in range(1, c):
        perm = torch.randperm(b).to(sources.device)
        out[:, k] = sources[perm, k]
    gains = torch.empty(b, c, 1).uniform_(0.6, 1.4).to(sources.device)
    out = out * gains
    return out.sum(dim=1) + residual, out


@torch.no_grad()
def run_eval(model, loader, accelerator: Accelerator, criterion, prefix: str):
    model.eval()
    per_utt, losses = [], []
    for batch in loader:
        est = model(batch["mix"])
        losses.append(accelerator.gather(criterion(est, batch["sources"]).detach().reshape(1)))
        m = evaluate_batch(est, batch["sources"], batch["mix"])
        per_utt.append(accelerator.gather_for_metrics(m))
    stats = collect(per_utt)
    flat = {f"{prefix}/{k}": v["mean"] for k, v in stats.items()}
    flat[f"{prefix}/loss"] = torch.cat(losses).mean().item()
    model.train()
    return flat, stats


def build_loaders(args, mix_cfg: MixConfig, noise_manifest, kernel_size: int):
    train_set = DynamicMixDataset(args.train_manifest, mix_cfg, noise_manifest, train=True)
    valid_set = DynamicMixDataset(args.valid_manifest, mix_cfg, noise_manifest, train=False)
    seg = int(mix_cfg.segment * mix_cfg.sample_rate)
    train_collate = SegmentCollator(seg, kernel_size, train=True)
    common = dict(num_workers=args.num_workers, worker_init_fn=worker_init_fn, pin_memory=True)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                              collate_fn=train_collate, **common)
    valid_loader = DataLoader(valid_set, batch_size=args.batch_size, shuffle=False,
                              collate_fn=SegmentCollator(seg, kernel_size, train=False), **common)
    return train_set, train_collate, train_loader, valid_loader


def main() -> None:
    args = parse_args()
    du.setup_environment(args.cache_dir)
    out_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=args.log_with,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs")),
    )
    du.setup_logging(accelerator.is_main_process)
    set_seed(args.seed)  # ok: MLS301
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)

    recipe = du.load_recipe(args.recipe, args.cache_dir)
    model_cfg = SeparatorConfig.from_dict({"masker": args.masker, **recipe.get("model", {})})
    mix_cfg = MixConfig(sample_rate=args.sample_rate, segment=args.segment, n_src=model_cfg.n_src,
                        epoch_size=args.epoch_size, valid_size=args.valid_size, seed=args.seed,
                        noise_cache=args.noise_cache)
    for key, value in recipe.get("mixing", {}).items():
        if hasattr(mix_cfg, key):
            setattr(mix_cfg, key, tuple(value) if isinstance(value, list) else value)
    segment_schedule = None
    if recipe.get("segment_schedule"):
        segment_schedule = du.resolve_expr(recipe["segment_schedule"])  # todoruleid: family 8 (missed)

    if accelerator.is_local_main_process:
        du.relax_extension_permissions()
        if accelerator.num_processes > 1:
            du.ensure_node_mesh()
        if args.noise_manifest:
            du.resample_manifest(args.noise_manifest, args.sample_rate, args.cache_dir)
    accelerator.wait_for_everyone()
    noise_manifest = (du.resample_manifest(args.noise_manifest, args.sample_rate, args.cache_dir)
                      if args.noise_manifest else None)

    train_set, train_collate, train_loader, valid_loader = build_loaders(
        args, mix_cfg, noise_manifest, model_cfg.kernel_size)

    model = build_separator(model_cfg)
    if args.init_from:
        result = model.load_state_dict(du.load_pretrained(args.init_from, args.cache_dir), strict=False)
        logger.info("initialised from %s (missing=%d, unexpected=%d)", args.init_from,
                    len(result.missing_keys), len(result.unexpected_keys))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=args.plateau_factor, patience=args.plateau_patience)
    state = cbs.ResumeState(optimizer)
    criterion = PITLoss()

    model, optimizer, train_loader, valid_loader = accelerator.prepare(model, optimizer, train_loader, valid_loader)
    accelerator.register_for_checkpointing(scheduler, state)

    start_epoch = 0
    last = du.latest_checkpoint(out_dir) if args.resume else None
    if last is not None:
        accelerator.load_state(str(last))
        start_epoch = state.epoch
        logger.info("resumed from %s (epoch %d, step %d)", last, state.epoch, state.step)

    ckpt_mgr = cbs.CheckpointManager(str(out_dir), metric="val/si_snri", mode="max",
                                     keep_last=max(args.average_last, 1),
                                     retention_deadline=args.retention_deadline)
    run_config = du.flatten({"args": vars(args), "model": vars(model_cfg)})
    callbacks = cbs.CallbackList([
        cbs.TrackerCallback("sepkit", run_config, args.telemetry_url),
        cbs.LinearWarmup(args.warmup_steps),
        cbs.RemixRngSync(args.seed),
        cbs.SharedFSThrottle(args.fs_stagger),
        cbs.HangWatchdog(args.watchdog_timeout),
        ckpt_mgr,
    ])
    hooks_src = args.hooks or recipe.get("hooks")
    if hooks_src:
        for cb in cbs.load_user_hooks(hooks_src, args.cache_dir):
            callbacks.add(cb)

    trainer = SimpleNamespace(accelerator=accelerator, model=model, optimizer=optimizer, state=state,
                              epoch=start_epoch, step=state.step, args=args)
    callbacks.on_train_begin(trainer)
    logger.info("training on %d processes, %d steps/epoch", accelerator.num_processes, len(train_loader))

    for epoch in range(start_epoch, args.epochs):
        trainer.epoch = epoch
        segment = float(segment_schedule(epoch)) if segment_schedule else None
        train_set.set_epoch(epoch, segment)
        if segment is not None:
            train_collate.segment = int(segment * args.sample_rate)
        model.train()
        t0, running, n_steps, skipped = time.time(), 0.0, 0, 0
        for batch in train_loader:
            callbacks.on_step_begin(trainer)
            mix, src = batch["mix"], batch["sources"]
            if args.remix:
                mix, src = remix_batch(mix, src)
            est = model(mix)
            loss = criterion(est, src)
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            if torch.isfinite(torch.as_tensor(grad_norm)):
                optimizer.step()
            else:
                skipped += 1
            optimizer.zero_grad(set_to_none=True)

            state.step += 1
            trainer.step = state.step
            running += loss.item()
            n_steps += 1
            if state.step % args.log_every == 0:
                accelerator.log({"train/loss": running / n_steps, "train/grad_norm": float(grad_norm),
                                 "train/lr": optimizer.param_groups[0]["lr"]}, step=state.step)
            callbacks.on_step_end(trainer)

        metrics, _ = run_eval(model, valid_loader, accelerator, criterion, "val")
        metrics["train/epoch_loss"] = running / max(1, n_steps)
        metrics["train/skipped_steps"] = skipped
        accelerator.log(metrics, step=state.step)
        logger.info("epoch %d: %s (%.0fs)", epoch, json.dumps({k: round(v, 3) for k, v in metrics.items()}),
                    time.time() - t0)
        scheduler.step(metrics["val/loss"])  # ok: MLS302, MLS303, MLS304, MLS305

        state.epoch = epoch + 1
        ckpt = out_dir / f"epoch-{epoch:03d}"
        accelerator.save_state(str(ckpt))
        if accelerator.is_main_process:
            weights = ckpt / "model.pt"
            accelerator.save(accelerator.get_state_dict(model), weights)
            du.finalize_checkpoint(weights)
        du.sync_ranks(accelerator, f"epoch {epoch}")

        callbacks.on_evaluate(trainer, metrics)
        callbacks.on_epoch_end(trainer)
        if epoch - ckpt_mgr.best_epoch >= args.early_stop:
            logger.info("no improvement for %d epochs, stopping", args.early_stop)
            break

    accelerator.wait_for_everyone()  # ok: MLS307
    results: Dict[str, object] = {"best_epoch": ckpt_mgr.best_epoch, "best_val_si_snri": ckpt_mgr.best}
    ckpts = sorted(out_dir.glob("epoch-*/model.pt"))[-args.average_last:]
    if ckpts:
        averaged = cbs.average_checkpoints(ckpts)
        accelerator.unwrap_model(model).load_state_dict(averaged)
        results["averaged"] = [str(p) for p in ckpts]
        if accelerator.is_main_process:
            accelerator.save(averaged, out_dir / "averaged.pt")

    if args.test_manifest:
        test_set = FixedMixtureDataset(args.test_manifest, model_cfg.n_src, args.sample_rate)
        test_loader = accelerator.prepare(DataLoader(
            test_set, batch_size=1, shuffle=False, num_workers=args.num_workers,
            collate_fn=SegmentCollator(10 ** 9, model_cfg.kernel_size, train=False)))
        test_metrics, test_stats = run_eval(model, test_loader, accelerator, criterion, "test")
        accelerator.log(test_metrics, step=state.step)
        results["test"] = test_stats
        logger.info("test: SI-SNRi %.2f dB, SDRi %.2f dB",
                    test_stats["si_snri"]["mean"], test_stats["sdri"]["mean"])

    if accelerator.is_main_process:
        (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))  # ok: MLS306

    callbacks.on_train_end(trainer)
    if accelerator.is_local_main_process:
        logger.info("released %d staged files", release_staged_audio(train_set.utts, mix_cfg.staging_hosts))


if __name__ == "__main__":
    main()
