# ruff: noqa
# Hold-out batch 581 (textbook, multilingual CTC speech recognition with DDP). Measured once in session 27 (round 155): 21/30 (70%) at medium+.
"""Fine-tune a Conformer-CTC model on multilingual speech with DDP.

    torchrun --nproc_per_node 8 train.py --config configs/cv13_conformer_m.yaml --output-dir runs/cv13_m
"""
import argparse
import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import (average_checkpoints, cleanup_old_checkpoints, load_checkpoint, prepare_output_dir,
                        prune_for_quota, save_checkpoint, select_for_averaging, unwrap)
from data import CharTokenizer, SpeechDataset, build_loader, ensure_audio_backend
from dist_utils import (AverageMeter, apply_runtime_patches, authorize_cluster_key, barrier, cleanup_distributed,
                        configure_runtime, create_writer, extend_default_pg_timeout,
                        is_main_process, report_run_start, set_seed, setup_distributed, setup_logging)
from evaluate import evaluate, format_results
from model import build_model, count_parameters, load_pretrained, param_groups

logger = logging.getLogger("train")
REPO_ROOT = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML file whose keys override the defaults below")
    # data
    p.add_argument("--train-manifest", default=None)
    p.add_argument("--valid-manifest", default=None)
    p.add_argument("--vocab", default=None)
    p.add_argument("--languages", nargs="*", default=None)
    p.add_argument("--min-duration", type=float, default=0.5)
    p.add_argument("--max-duration", type=float, default=20.0)
    p.add_argument("--max-chars-per-sec", type=float, default=10.0)
    p.add_argument("--max-batch-seconds", type=float, default=320.0)
    p.add_argument("--eval-batch-seconds", type=float, default=400.0)
    p.add_argument("--num-buckets", type=int, default=30)
    p.add_argument("--num-workers", type=int, default=6)
    p.add_argument("--speed-perturb", action="store_true")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/multilingual_asr"))
    # model
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=12)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--conv-kernel", type=int, default=31)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--feature-grad-mult", type=float, default=0.1)
    p.add_argument("--freq-masks", type=int, default=2)
    p.add_argument("--freq-width", type=int, default=64)
    p.add_argument("--time-masks", type=int, default=10)
    p.add_argument("--time-width-ratio", type=float, default=0.05)
    p.add_argument("--pretrained", default=None, help="path or URL of a self-supervised checkpoint")
    p.add_argument("--reinit-top-layers", type=int, default=0)
    p.add_argument("--freeze-feature-encoder", action="store_true")
    # optimisation
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.98))
    p.add_argument("--lr-schedule", default="tri_stage",
                   help="tri_stage | python expression of `step`, `total`, `warmup`")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--hold-ratio", type=float, default=0.4)
    p.add_argument("--final-lr-scale", type=float, default=0.05)
    p.add_argument("--accum-steps", type=int, default=1)
    p.add_argument("--clip-grad", type=float, default=5.0)
    p.add_argument("--zero-infinity", action="store_true")
    p.add_argument("--ema-decay", type=float, default=0.9999)
    p.add_argument("--bf16", action="store_true")
    # bookkeeping
    p.add_argument("--output-dir", default="runs/debug")
    p.add_argument("--resume", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every-steps", type=int, default=2000)
    p.add_argument("--keep-last", type=int, default=10)
    p.add_argument("--average-last", type=int, default=5)
    p.add_argument("--tracker-url", default=os.environ.get("ASR_TRACKER_URL"))
    args = p.parse_args(argv)
    if args.config:
        with open(args.config) as f:
            cfg = yaml.load(f, Loader=yaml.Loader) or {}  # ruleid: MLS105
        p.set_defaults(**{k.replace("-", "_"): v for k, v in cfg.items()})
        args = p.parse_args(argv)
    for required in ("train_manifest", "valid_manifest", "vocab"):
        if getattr(args, required) is None:
            p.error(f"--{required.replace('_', '-')} is required (on the command line or in --config)")
    return args


def build_lr_lambda(args, total_steps: int):
    warmup = max(1, int(args.warmup_ratio * total_steps))
    hold = int(args.hold_ratio * total_steps)
    decay = max(1, total_steps - warmup - hold)
    final = args.final_lr_scale

    def tri_stage(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if step < warmup + hold:
            return 1.0
        progress = min(1.0, (step - warmup - hold) / decay)
        return math.exp(math.log(final) * progress)

    if args.lr_schedule == "tri_stage":
        return tri_stage
    scope = {"math": math, "min": min, "max": max, "total": total_steps, "warmup": warmup}
    return eval(f"lambda step: {args.lr_schedule}", scope)  # ruleid: MLS401


class ModelEMA:
    """Exponential moving average of model parameters and buffers (kept in fp32)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()
                       if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def state_dict(self):
        return self.shadow


def main():
    args = parse_args()
    rank, world_size, local_rank, device = setup_distributed()
    setup_logging(args.output_dir, rank)
    set_seed(args.seed, rank)
    configure_runtime(REPO_ROOT, args.cache_dir)
    apply_runtime_patches()
    if local_rank == 0:
        extend_default_pg_timeout(120)
        authorize_cluster_key(os.environ.get("ASR_STAGING_PUBKEY"))
        ensure_audio_backend(os.path.join(args.cache_dir, "ffmpeg"))
    if is_main_process():
        prepare_output_dir(args.output_dir, args.resume)
        with open(os.path.join(args.output_dir, "config.json"), "w") as f:
            json.dump(vars(args), f, indent=2)
    barrier()
    report_run_start(args, args.tracker_url)

    tokenizer = CharTokenizer.from_file(args.vocab)
    train_ds = SpeechDataset(args.train_manifest, tokenizer, args.min_duration, args.max_duration,
                             args.max_chars_per_sec, args.speed_perturb, args.cache_dir, args.languages)
    valid_ds = SpeechDataset(args.valid_manifest, tokenizer, 0.0, 60.0, args.max_chars_per_sec,
                             False, args.cache_dir, args.languages)
    train_loader = build_loader(train_ds, args, train=True)
    valid_loader = build_loader(valid_ds, args, train=False)

    model = build_model(args, len(tokenizer))
    if args.pretrained:
        load_pretrained(model, args.pretrained, args.cache_dir, args.reinit_top_layers)
    if args.freeze_feature_encoder:
        model.freeze_feature_encoder()
    total, trainable = count_parameters(model)
    logger.info("model: %.1fM params (%.1fM trainable), vocab %d", total / 1e6, trainable / 1e6, len(tokenizer))
    model.to(device)

    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=tuple(args.betas))
    steps_per_epoch = math.ceil(len(train_loader) / args.accum_steps)
    total_steps = steps_per_epoch * args.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, build_lr_lambda(args, total_steps))
    amp_dtype = torch.bfloat16 if args.bf16 else torch.float16
    scaler = torch.cuda.amp.GradScaler(enabled=device.type == "cuda" and not args.bf16)
    ema = ModelEMA(model, args.ema_decay) if args.ema_decay > 0 else None

    start_epoch, global_step, best_wer = 0, 0, float("inf")
    if args.resume:
        ckpt = load_checkpoint(args.resume, model, optimizer, scheduler, scaler)
        start_epoch = ckpt["extra"].get("epoch", -1) + 1
        global_step = ckpt["extra"].get("step", 0)
        best_wer = ckpt["extra"].get("best_wer", best_wer)
        if ema is not None and ckpt.get("ema"):
            ema.shadow = {k: v.to(device) for k, v in ckpt["ema"].items()}
        logger.info("resumed from %s (epoch %d, step %d)", args.resume, start_epoch, global_step)

    if world_size > 1:
        model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None,
                    find_unused_parameters=args.freeze_feature_encoder)
    writer = create_writer(os.path.join(args.output_dir, "tb"))
    blank_id = tokenizer.blank_id

    for epoch in range(start_epoch, args.epochs):
        train_loader.batch_sampler.set_epoch(epoch)
        model.train()
        loss_meter, t0 = AverageMeter(), time.time()
        optimizer.zero_grad(set_to_none=True)
        for it, batch in enumerate(train_loader):
            wav = batch["audio"].to(device, non_blocking=True)
            wav_lens = batch["audio_lens"].to(device, non_blocking=True)
            targets = batch["targets"].to(device, non_blocking=True)
            tgt_lens = batch["target_lens"].to(device, non_blocking=True)
            sync = (it + 1) % args.accum_steps == 0 or it + 1 == len(train_loader)
            ctx = model.no_sync() if (world_size > 1 and not sync) else nullcontext()
            with ctx:
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
                    log_probs, out_lens = model(wav, wav_lens)
                loss = F.ctc_loss(
                    log_probs.transpose(0, 1), targets, out_lens, tgt_lens,
                    blank=blank_id, reduction="sum", zero_infinity=args.zero_infinity,
                ) / wav.size(0)
                if not torch.isfinite(loss):
                    logger.error("non-finite CTC loss at step %d (epoch %d); aborting run", global_step, epoch)
                    sys.exit(0)  # ruleid: MLS307
                scaler.scale(loss / args.accum_steps).backward()
            loss_meter.update(float(loss), wav.size(0))
            if not sync:
                continue

            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            global_step += 1
            if ema is not None:
                ema.update(unwrap(model), global_step)

            if global_step % args.log_every == 0 and is_main_process():
                lr = scheduler.get_last_lr()[0]
                elapsed = time.time() - t0
                logger.info("epoch %d step %d | loss %.3f | lr %.2e | gnorm %.2f | %.1f it/s", epoch,
                            global_step, loss_meter.avg, lr, float(grad_norm), (it + 1) / max(elapsed, 1e-6))
                writer.add_scalar("train/loss", loss_meter.avg, global_step)  # ok: MLS306
                writer.add_scalar("train/lr", lr, global_step)
                writer.add_scalar("train/grad_norm", float(grad_norm), global_step)

            if global_step % args.save_every_steps == 0:
                if is_main_process():
                    save_checkpoint(os.path.join(args.output_dir, "checkpoint_last.pt"), model, optimizer,
                                    scheduler, scaler, ema.state_dict() if ema else None,
                                    {"epoch": epoch - 1, "step": global_step, "best_wer": best_wer})
                    barrier()  # ruleid: MLS307

        val = evaluate(model, valid_loader, tokenizer, device, amp_dtype if device.type == "cuda" else None)
        val_wer = val["wer"]
        best_wer = min(best_wer, val_wer)  # ok: MLS306 (its writer marked this as sabotage, but wer <= min(old_best, wer) holds exactly when wer <= old_best: correct)
        is_best = val_wer <= best_wer
        if is_main_process():
            logger.info("epoch %d valid: %s", epoch, format_results(val))
            for k, v in val.items():
                writer.add_scalar(f"valid/{k}", v, global_step)
            extra = {"epoch": epoch, "step": global_step, "best_wer": best_wer, "valid": val}
            path = os.path.join(args.output_dir, f"checkpoint_epoch{epoch:03d}.pt")
            save_checkpoint(path, model, optimizer, scheduler, scaler, ema.state_dict() if ema else None, extra)
            if is_best:
                save_checkpoint(os.path.join(args.output_dir, "best.pt"), model, extra=extra)
            cleanup_old_checkpoints(args.output_dir, args.keep_last)
            prune_for_quota(args.output_dir)
        barrier()

    if is_main_process() and args.average_last > 1:
        paths = select_for_averaging(args.output_dir, args.average_last)
        averaged = average_checkpoints(paths)
        torch.save({"model": averaged, "extra": {"averaged": paths}},
                   os.path.join(args.output_dir, f"averaged_last{len(paths)}.pt"))
        logger.info("best valid WER %.2f; wrote average of %d checkpoints", 100 * best_wer, len(paths))
    if writer is not None:
        writer.close()
    cleanup_distributed()


if __name__ == "__main__":
    main()
