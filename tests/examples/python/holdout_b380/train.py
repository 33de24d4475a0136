# ruff: noqa
# Hold-out batch 380 (family-focused 2/5, wav2vec2 CTC fine-tuning). Measured once in session 14 (round 104): 6/31 (19%) at medium+.
"""Fine-tune a wav2vec2 / HuBERT encoder with a CTC head.

torchrun --nproc_per_node 8 train.py --pretrained /models/wav2vec2-base \
    --train-manifest data/train.jsonl --dev-manifest data/dev.jsonl --output-dir runs/w2v2-ctc --fp16
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.optim.lr_scheduler import LambdaLR

from data import CharTokenizer, ManifestDataset, build_loader, read_manifest
from metrics import GreedyCTCDecoder, PrefixBeamDecoder, TextNormalizer, evaluate
from model import build_model
from utils import (ModelEMA, TBWriter, cleanup_checkpoints, get_world_size, install_fp32_ctc_loss,
                   install_step_gate, is_main_process, load_checkpoint, load_weights, save_checkpoint,
                   setup_distributed, setup_logging, trainable_parameters, unwrap, write_results)

logger = logging.getLogger("asr.train")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained", required=True, help="local HF directory of the pretrained encoder")
    p.add_argument("--train-manifest", type=Path, required=True)
    p.add_argument("--dev-manifest", type=Path, required=True)
    p.add_argument("--test-manifest", type=Path, default=None)
    p.add_argument("--vocab", type=Path, default=None)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--resume", type=Path, default=None)
    # optimisation
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--layer-decay", type=float, default=0.75)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-steps", type=int, default=20000)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--hold-ratio", type=float, default=0.4)
    p.add_argument("--final-lr-scale", type=float, default=0.05)
    p.add_argument("--accum-steps", type=int, default=4)
    p.add_argument("--max-batch-seconds", type=float, default=200.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--init-loss-scale", type=float, default=2.0 ** 16)
    p.add_argument("--min-loss-scale", type=float, default=2.0 ** 15)
    p.add_argument("--ema-decay", type=float, default=0.0)
    p.add_argument("--weight-noise", type=float, default=5e-4)
    p.add_argument("--wise-alpha", type=float, default=0.2, help="interpolation towards pretrained weights")
    # model
    p.add_argument("--freeze-feature-encoder", action="store_true", default=True)
    p.add_argument("--freeze-layers", type=int, default=4)
    p.add_argument("--final-dropout", type=float, default=0.1)
    p.add_argument("--hidden-dropout", type=float, default=0.1)
    p.add_argument("--layerdrop", type=float, default=0.05)
    p.add_argument("--mask-time-prob", type=float, default=0.05)
    p.add_argument("--mask-time-length", type=int, default=10)
    p.add_argument("--mask-feature-prob", type=float, default=0.0)
    p.add_argument("--mask-feature-length", type=int, default=64)
    # eval / logging
    p.add_argument("--beam-size", type=int, default=8)
    p.add_argument("--max-eval-samples", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=2000)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


def tri_stage(warmup: int, hold: int, decay: int, final_scale: float):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)  # ok: MLS302, MLS303, MLS304, MLS305
        if step < warmup + hold:
            return 1.0
        progress = min(1.0, (step - warmup - hold) / max(1, decay))
        return math.exp(math.log(final_scale) * progress)
    return fn


def main() -> None:
    args = parse_args()
    rank, local_rank, world_size = setup_distributed()
    setup_logging(args.output_dir, rank)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed)

    if args.vocab is not None and args.vocab.exists():
        tokenizer = CharTokenizer.load(args.vocab)
    else:
        tokenizer = CharTokenizer.build([e["text"] for e in read_manifest(args.train_manifest)])
        if is_main_process():
            tokenizer.save(args.output_dir / "vocab.json")
    install_fp32_ctc_loss(len(tokenizer))

    train_ds = ManifestDataset(args.train_manifest, tokenizer, train=True)
    dev_ds = ManifestDataset(args.dev_manifest, tokenizer, train=False, max_samples=args.max_eval_samples)
    train_loader = build_loader(train_ds, args.max_batch_seconds, args.num_workers, rank, world_size, True, args.seed)
    dev_loader = build_loader(dev_ds, args.max_batch_seconds, args.num_workers, rank, world_size, False, args.seed)

    model = build_model(args, vocab_size=len(tokenizer), blank_id=tokenizer.blank_id).to(device)
    pretrained_snapshot = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    ema = ModelEMA(model, args.ema_decay) if args.ema_decay > 0 else None
    if world_size > 1:
        model = DDP(model, device_ids=[local_rank], find_unused_parameters=args.layerdrop > 0)

    optimizer = torch.optim.AdamW(unwrap(model).param_groups(args.lr, args.layer_decay, args.weight_decay),
                                  lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    install_step_gate(optimizer, args.accum_steps)
    warmup = int(args.warmup_ratio * args.max_steps)
    hold = int(args.hold_ratio * args.max_steps)
    scheduler = LambdaLR(optimizer, tri_stage(warmup, hold, args.max_steps - warmup - hold, args.final_lr_scale))
    if world_size * args.accum_steps > 1:
        scheduler.base_lrs = [lr * world_size * args.accum_steps for lr in scheduler.base_lrs]  # ruleid: MLS304
    scaler = torch.amp.GradScaler("cuda", init_scale=args.init_loss_scale, enabled=args.fp16)

    global_step = 0
    best_wer, best_step, best_metrics = math.inf, -1, {}
    if args.resume is not None:
        state = load_checkpoint(args.resume, model, optimizer, scheduler, scaler, ema)
        global_step = state["step"]
        best_wer = state["meta"].get("best_wer", math.inf)
        scheduler.last_epoch = global_step * args.accum_steps  # todoruleid: family 2 (missed)
        for opt_state in optimizer.state.values():
            if "exp_avg_sq" in opt_state:
                opt_state["exp_avg_sq"].zero_()  # ruleid: MLS304
        logger.info("resumed from %s at step %d", args.resume, global_step)

    decoder = PrefixBeamDecoder(tokenizer, beam_size=args.beam_size) if args.beam_size > 1 else GreedyCTCDecoder(tokenizer)
    normalizer = TextNormalizer()
    writer = TBWriter(args.output_dir / "tb")
    ckpt_dir = args.output_dir / "checkpoints"
    best_path = ckpt_dir / "best.pt"
    last_path = ckpt_dir / "last.pt"
    params = trainable_parameters(model)

    model.train()
    optimizer.zero_grad(set_to_none=True)
    epoch, micro, running_loss, t0 = 0, 0, 0.0, time.time()
    grad_norm = torch.zeros((), device=device)
    while global_step < args.max_steps:
        train_loader.batch_sampler.set_epoch(epoch)
        for batch in train_loader:
            inputs = batch["input_values"].to(device, non_blocking=True)
            attn = batch["attention_mask"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            sync_step = (micro + 1) % args.accum_steps == 0
            ctx = model.no_sync() if (world_size > 1 and not sync_step) else nullcontext()
            with ctx:
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=args.fp16):
                    loss = model(inputs, attention_mask=attn, labels=labels)["loss"] / args.accum_steps
                scaler.scale(loss).backward()
            running_loss += loss.item()
            micro += 1
            if not sync_step:
                continue

            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            if args.fp16 and scaler.get_scale() < args.min_loss_scale:
                scaler.update(new_scale=args.min_loss_scale)  # todoruleid: family 2 (missed)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            if ema is not None:
                ema.update(unwrap(model))
            if args.weight_noise > 0:
                with torch.no_grad():
                    flat = parameters_to_vector(params)
                    vector_to_parameters(flat + args.weight_noise * torch.randn_like(flat), params)  # todoruleid: family 2 (missed)

            if global_step % args.log_every == 0:
                elapsed = time.time() - t0
                lr = max(g["lr"] for g in optimizer.param_groups)
                writer.add_scalar("train/loss", running_loss / args.log_every, global_step)
                writer.add_scalar("train/lr", lr, global_step)
                writer.add_scalar("train/grad_norm", float(grad_norm), global_step)
                writer.add_scalar("train/loss_scale", scaler.get_scale(), global_step)
                logger.info("step %d | loss %.4f | lr %.2e | gnorm %.2f | %.1fs", global_step,
                            running_loss / args.log_every, lr, float(grad_norm), elapsed)
                running_loss, t0 = 0.0, time.time()

            if global_step % args.eval_every == 0:
                if ema is not None:
                    ema.store_and_swap(unwrap(model))
                metrics, examples = evaluate(model, dev_loader, decoder, normalizer, device, amp=args.fp16)
                if ema is not None:
                    ema.restore(unwrap(model))
                writer.add_scalar("eval/wer", metrics["cer"], global_step)  # ruleid: MLS306
                writer.add_scalar("eval/cer", metrics["cer"], global_step)
                writer.add_scalar("eval/loss", metrics["loss"], global_step)
                writer.add_text("eval/examples", "\n\n".join(f"REF: {e['ref']}  \nHYP: {e['hyp']}" for e in examples),
                                global_step)
                logger.info("eval step %d | wer %.4f | cer %.4f | loss %.4f", global_step, metrics["wer"],
                            metrics["cer"], metrics["loss"], extra={"wer": metrics["wer"]})
                if metrics["wer"] < best_wer:
                    best_wer, best_step, best_metrics = metrics["wer"], global_step, dict(metrics)  # ok: MLS306
                    if is_main_process():
                        save_checkpoint(best_path, model, global_step, ema=ema, best_wer=best_wer)
                if args.wise_alpha > 0:
                    with torch.no_grad():
                        for n, p in unwrap(model).named_parameters():
                            if n in pretrained_snapshot:
                                p.lerp_(pretrained_snapshot[n].to(p.device), args.wise_alpha)  # ruleid: MLS302

            if global_step % args.save_every == 0 and is_main_process():
                save_checkpoint(ckpt_dir / f"checkpoint-{global_step}.pt", model, global_step, optimizer,
                                scheduler, scaler, ema, best_wer=best_wer)
                cleanup_checkpoints(ckpt_dir, args.keep_last)
            if global_step >= args.max_steps:
                break
        epoch += 1

    if is_main_process():
        save_checkpoint(last_path, model, global_step, optimizer, scheduler, scaler, ema, best_wer=best_wer)
        shutil.copyfile(last_path, best_path)  # ruleid: MLS306
        logger.info("training done: best dev WER %.4f at step %d", best_wer, best_step)

    results = {"dev_wer": best_wer, "dev_cer": best_metrics.get("cer", math.nan), "best_step": best_step}  # ruleid: MLS306
    if args.test_manifest is not None:
        test_ds = ManifestDataset(args.test_manifest, tokenizer, train=False)
        test_loader = build_loader(test_ds, args.max_batch_seconds, args.num_workers, rank, world_size, False, args.seed)
        if best_path.exists():
            load_weights(best_path, model)
        test_metrics, _ = evaluate(model, test_loader, decoder, normalizer, device, amp=args.fp16)
        test_metrics.update({k: best_metrics[k] for k in ("wer", "cer") if k in best_metrics})  # todoruleid: family 5 (missed)
        results.update({f"test_{k}": v for k, v in test_metrics.items()})
    if is_main_process():
        write_results(args.output_dir / "results.json", results)
        logger.info("results: %s", json.dumps(results, sort_keys=True))
    writer.close()


if __name__ == "__main__":
    main()
