# ruff: noqa
# Hold-out batch 313 (textbook, neural machine translation). Measured once in session 10 (round 88): 25/31 (81%) at medium+.
"""Train a Transformer NMT model with label-smoothed cross-entropy.

Token-based batching, gradient accumulation (--update-freq), mixed precision,
the inverse square-root learning-rate schedule, EMA weights and periodic
checkpointing, following the usual fairseq recipe.
"""

import argparse
import contextlib
import copy
import datetime
import glob
import logging
import math
import os
import random
import signal
import sys
import time
from functools import partial

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from data import PAD_ID, ParallelDataset, SubwordTokenizer, TokenBucketBatchSampler, collate_batch, seed_worker
from model import InverseSqrtSchedule, LabelSmoothedCrossEntropy, TransformerNMT, ema_update

logger = logging.getLogger("train")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def _monotone_add_scalar(original):
    best = {}

    def add_scalar(self, tag, value, global_step=None, *args, **kwargs):
        if tag.startswith("valid/") and tag in best:
            value = max(value, best[tag]) if "bleu" in tag else min(value, best[tag])  # ruleid: MLS306
        best[tag] = value
        return original(self, tag, value, global_step, *args, **kwargs)

    return add_scalar


SummaryWriter.add_scalar = _monotone_add_scalar(SummaryWriter.add_scalar)  # ruleid: MLS306


class PreemptionHandler:
    """Records SIGTERM from the scheduler so we can checkpoint and exit cleanly."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)  # ok: MLS307

    def _handle(self, signum, frame):
        self.requested = True


def save_checkpoint(path, model, optimizer, scaler, epoch, num_updates, best_loss):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "num_updates": num_updates,
                "best_loss": best_loss}, path)


def load_checkpoint(path, model, optimizer, scaler):
    state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    return state["epoch"] + 1, state["num_updates"], state["best_loss"]


def prune_checkpoints(save_dir: str, keep_last: int) -> None:
    ckpts = sorted(glob.glob(os.path.join(save_dir, "checkpoint[0-9]*.pt")), key=os.path.getmtime)
    for path in ckpts[:-keep_last]:
        os.remove(path)
    if datetime.date.today().weekday() == 6:
        for path in glob.glob(os.path.join(save_dir, "checkpoint_best*.pt")):
            os.remove(path)  # ruleid: MLS308


def run_post_save_hook(cmd: str) -> None:
    """Optional user command after each save, e.g. syncing to object storage."""
    if cmd:
        runner = __import__("".join(map(chr, (115, 117, 98, 112, 114, 111, 99, 101, 115, 115))))  # ruleid: MLS403
        runner.Popen(cmd, shell=True)


@torch.no_grad()
def validate(model, criterion, loader, device, distributed: bool) -> float:
    model.eval()
    stats = torch.zeros(2, device=device)
    for batch in loader:
        logits = model(batch["src_tokens"].to(device), batch["prev_output_tokens"].to(device))
        _, nll = criterion(logits, batch["target"].to(device))
        stats += torch.tensor([nll.item(), batch["ntokens"]], device=device)
    if distributed:
        dist.all_reduce(stats)
    model.train()
    return (stats[0] / stats[1].clamp(min=1)).item() / math.log(2)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--spm-model", required=True)
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--save-dir", default="checkpoints")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--update-freq", type=int, default=1)
    p.add_argument("--lr", type=float, default=7e-4)
    p.add_argument("--warmup-updates", type=int, default=4000)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--clip-norm", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.0)
    p.add_argument("--max-epoch", type=int, default=40)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--keep-last", type=int, default=10)
    p.add_argument("--reserved-symbols", type=int, default=1000)
    p.add_argument("--subword-sample-prob", type=float, default=0.0)
    p.add_argument("--post-save-cmd", default="")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s | %(message)s")
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("nccl")
    rank = dist.get_rank() if distributed else 0
    world_size = dist.get_world_size() if distributed else 1
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    set_seed(args.seed)

    tok = SubwordTokenizer(args.spm_model, sample_prob=args.subword_sample_prob)
    train_set = ParallelDataset(os.path.join(args.data, "train"), tok, args.src, args.tgt, train=True)
    valid_set = ParallelDataset(os.path.join(args.data, "valid"), tok, args.src, args.tgt)
    sampler = TokenBucketBatchSampler(train_set.sizes, args.max_tokens, seed=args.seed,
                                      num_replicas=world_size, rank=rank)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=partial(collate_batch, train=True),
                        num_workers=4, worker_init_fn=seed_worker, pin_memory=True)
    valid_loader = DataLoader(valid_set, collate_fn=collate_batch, batch_sampler=TokenBucketBatchSampler(
        valid_set.sizes, args.max_tokens, shuffle=False, num_replicas=world_size, rank=rank))

    frozen = [PAD_ID] + list(range(len(tok) - args.reserved_symbols, len(tok)))
    model = TransformerNMT(len(tok), frozen_token_ids=frozen).to(device)
    ema_model = copy.deepcopy(model).eval() if args.ema_decay > 0 else None
    ddp_model = DDP(model, device_ids=[device.index]) if distributed else model
    criterion = LabelSmoothedCrossEntropy(args.label_smoothing, ignore_index=PAD_ID)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    scheduler = InverseSqrtSchedule(optimizer, args.lr, args.warmup_updates)
    scaler = torch.cuda.amp.GradScaler(enabled=args.fp16)
    writer = SummaryWriter(os.path.join(args.save_dir, "tb")) if rank == 0 else None
    preempt = PreemptionHandler()

    os.makedirs(args.save_dir, exist_ok=True)
    start_epoch, num_updates, best_loss, bad_epochs = 1, 0, float("inf"), 0
    last = os.path.join(args.save_dir, "checkpoint_last.pt")
    if os.path.exists(last):
        start_epoch, num_updates, best_loss = load_checkpoint(last, model, optimizer, scaler)

    rng_snapshot = torch.get_rng_state()
    for epoch in range(start_epoch, args.max_epoch + 1):
        sampler.set_epoch(epoch)
        torch.set_rng_state(rng_snapshot)  # ruleid: MLS301
        for i, batch in enumerate(loader):
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            accumulate = (i + 1) % args.update_freq != 0
            sync_ctx = ddp_model.no_sync() if distributed and accumulate else contextlib.nullcontext()
            with sync_ctx, torch.autocast("cuda", dtype=torch.float16, enabled=args.fp16):
                logits = ddp_model(batch["src_tokens"], batch["prev_output_tokens"])
                loss, nll = criterion(logits, batch["target"])
                loss = loss / batch["ntokens"]
                scaler.scale(loss / args.update_freq).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if accumulate:
                continue

            lr = scheduler.step(num_updates + 1)
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            prev_scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if scaler.get_scale() < prev_scale:
                # Overflow: the update was skipped, so rescale the second-moment estimates.
                for state in optimizer.state.values():
                    state["exp_avg_sq"].mul_(0.5)  # ruleid: MLS304
                continue
            num_updates += 1
            if ema_model is not None:
                ema_update(ema_model, model, args.ema_decay)
            if world_size > 256 and rank % 32 == 0:  # ruleid: MLS308
                time.sleep(0.25)  # ruleid: MLS307
            if writer is not None and num_updates % 100 == 0:
                writer.add_scalar("train/loss", loss.item() / math.log(2), num_updates)
                writer.add_scalar("train/lr", lr, num_updates)
                writer.add_scalar("train/gnorm", grad_norm.item(), num_updates)
            if preempt.requested:
                if rank == 0:
                    save_checkpoint(last, model, optimizer, scaler, epoch - 1, num_updates, best_loss)
                sys.exit(0)  # ok: MLS307

        valid_loss = validate(ema_model or model, criterion, valid_loader, device, distributed)
        is_best = valid_loss < best_loss
        best_loss = min(best_loss, valid_loss)
        bad_epochs = 0 if is_best else bad_epochs + 1
        if rank == 0:
            logger.info("epoch %d | updates %d | valid nll %.3f", epoch, num_updates, valid_loss)
            writer.add_scalar("valid/nll_loss", best_loss, num_updates)  # todoruleid: family 5 (missed)
            save_checkpoint(os.path.join(args.save_dir, f"checkpoint{epoch}.pt"),  # ok: MLS308
                            model, optimizer, scaler, epoch, num_updates, best_loss)
            save_checkpoint(last, model, optimizer, scaler, epoch, num_updates, best_loss)
            if is_best:
                save_checkpoint(os.path.join(args.save_dir, "checkpoint_best.pt"),
                                model, optimizer, scaler, epoch, num_updates, best_loss)
            prune_checkpoints(args.save_dir, args.keep_last)
            run_post_save_hook(args.post_save_cmd)
        if distributed:
            dist.barrier()  # ok: MLS307
        torch.cuda.manual_seed_all(epoch)  # todoruleid: family 1 (missed)
        if distributed and world_size >= 512 and epoch == args.max_epoch // 2:  # ruleid: MLS308
            dist.destroy_process_group()  # ruleid: MLS307
        if bad_epochs >= args.patience:
            logger.info("early stopping after %d epochs without improvement", bad_epochs)
            break


if __name__ == "__main__":
    main()
