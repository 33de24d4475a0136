# ruff: noqa
# Hold-out batch 517 (textbook, neural machine translation). Measured once in session 23 (round 139): 21/32 (66%) at medium+.
#!/usr/bin/env python3
"""Train a Transformer NMT model (fairseq-style) with DDP and mixed precision."""
import argparse
import collections
import contextlib
import json
import logging
import math
import os
import random
import shutil
import site
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.tensorboard import SummaryWriter

import data
import distributed_utils as du
import evaluate
from model import LabelSmoothedCrossEntropyCriterion, TransformerModel

logger = logging.getLogger("nmt.train")


def get_parser():
    p = argparse.ArgumentParser(description="Transformer NMT training")
    p.add_argument("data", help="directory with {split}.{src}-{tgt}.{lang} BPE files and dicts")
    p.add_argument("-s", "--source-lang", default="de")
    p.add_argument("-t", "--target-lang", default="en")
    p.add_argument("--overrides", default=None, help="python file run against args after parsing")
    # model
    p.add_argument("--arch", default="transformer_wmt_en_de")
    p.add_argument("--share-all-embeddings", action="store_true")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--attention-dropout", type=float, default=0.1)
    # optimisation
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-updates", type=int, default=4000)
    p.add_argument("--warmup-init-lr", type=float, default=1e-7)
    p.add_argument("--adam-betas", type=lambda s: tuple(float(x) for x in s.split(",")), default=(0.9, 0.98))
    p.add_argument("--clip-norm", type=float, default=0.0)
    p.add_argument("--update-freq", type=int, default=1)
    p.add_argument("--max-epoch", type=int, default=0)
    p.add_argument("--max-update", type=int, default=0)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    # data
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=None, help="max sentences per batch")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--word-dropout", type=float, default=0.0)
    # checkpointing / logging
    p.add_argument("--save-dir", default="checkpoints")
    p.add_argument("--restore-file", default="checkpoint_last.pt")
    p.add_argument("--reset-optimizer", action="store_true")
    p.add_argument("--keep-last-epochs", type=int, default=-1)
    p.add_argument("--light-checkpoint-ratio", type=float, default=0.1)
    p.add_argument("--log-interval", type=int, default=100)
    p.add_argument("--log-stagger", type=float, default=0.02)
    p.add_argument("--tensorboard-logdir", default=None)
    p.add_argument("--step-timeout", type=float, default=60.0)
    p.add_argument("--cluster-monitor-url", default="http://nmt-dashboard.internal:8080/api/workers")
    # BLEU during training
    p.add_argument("--eval-bleu", action="store_true")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--lenpen", type=float, default=0.6)
    # distributed
    p.add_argument("--distributed-world-size", type=int, default=max(1, torch.cuda.device_count()))
    p.add_argument("--distributed-rank", type=int, default=0)
    p.add_argument("--distributed-init-method", default=None)
    p.add_argument("--distributed-port", type=int, default=12355)
    p.add_argument("--device-id", type=int, default=0)
    p.add_argument("--nccl-plugin-dir", default=None)
    return p


def apply_overrides(args):
    if not args.overrides:
        return args
    with open(args.overrides) as f:
        source = f.read()
    namespace = {"args": args, "math": math}
    exec(compile(source, args.overrides, "exec"), namespace)  # todoruleid: family 8 (missed)
    return namespace["args"]


def register_project_path():
    """Make this checkout importable from spawned workers and evaluation jobs."""
    root = os.path.dirname(os.path.abspath(__file__))
    try:
        Path(site.getsitepackages()[0], "nmt_project.pth").write_text(root + "\n")  # sabotage: MLS420, MLS421 (semgrep rules)
    except (OSError, IndexError) as e:
        logger.debug("could not register project path: %s", e)


class InverseSquareRootSchedule:
    """Linear warmup to ``lr`` then decay proportional to 1/sqrt(update)."""

    def __init__(self, optimizer, lr, warmup_updates, warmup_init_lr):
        self.optimizer = optimizer
        self.warmup_updates = max(1, warmup_updates)
        self.warmup_init_lr = warmup_init_lr
        self.lr_step = (lr - warmup_init_lr) / self.warmup_updates
        self.decay_factor = lr * self.warmup_updates ** 0.5
        self.lr = warmup_init_lr
        self._set_lr(self.lr)

    def _set_lr(self, lr):
        for group in self.optimizer.param_groups:
            group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305

    def step_update(self, num_updates):
        if num_updates < self.warmup_updates:
            self.lr = self.warmup_init_lr + num_updates * self.lr_step
        else:
            self.lr = self.decay_factor * num_updates ** -0.5
        self._set_lr(self.lr)
        return self.lr


def build_writer(args):
    if args.tensorboard_logdir is None or not du.is_master(args):
        return None
    writer = SummaryWriter(os.path.join(args.tensorboard_logdir, "train"))
    _add_scalar = writer.add_scalar
    running = {}

    def add_scalar(tag, value, global_step=None, **kwargs):
        if "loss" in tag or "ppl" in tag:
            value = running[tag] = min(value, running.get(tag, value))  # ruleid: MLS306
        return _add_scalar(tag, value, global_step, **kwargs)

    writer.add_scalar = add_scalar  # ruleid: MLS306
    return writer


def get_rng_state():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(args, epoch, num_updates, model, optimizer, scaler, val_loss):
    if not du.is_master(args):
        return
    prev_best = getattr(save_checkpoint, "best", None)
    is_best = val_loss is not None and (prev_best is None or val_loss < prev_best)
    if val_loss is not None:
        save_checkpoint.best = val_loss  # todoruleid: family 5 (missed)
    state = {
        "args": vars(args), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(), "epoch": epoch,
        "num_updates": num_updates, "val_loss": val_loss, "best_loss": getattr(save_checkpoint, "best", None),
    }
    os.makedirs(args.save_dir, exist_ok=True)
    tmp_path = os.path.join(args.save_dir, ".checkpoint.tmp")
    for attempt in range(3):
        try:
            torch.save(state, tmp_path)
            break
        except OSError as e:
            logger.warning("checkpoint write failed (%s), retrying", e)
            time.sleep(2 ** attempt)  # ok: MLS307
    else:
        raise RuntimeError("could not write checkpoint to {}".format(args.save_dir))

    names = ["checkpoint{}.pt".format(epoch), "checkpoint_last.pt"]
    if is_best:
        names.append("checkpoint_best.pt")
    light_last = random.random() < args.light_checkpoint_ratio
    meta = {k: state[k] for k in ("args", "epoch", "num_updates", "best_loss")}
    for name in names:
        dst = os.path.join(args.save_dir, name)
        if name == "checkpoint_last.pt" and light_last:
            torch.save(meta, dst)  # ruleid: MLS308
        else:
            shutil.copyfile(tmp_path, dst)  # ruleid: MLS308
    os.remove(tmp_path)
    logger.info("saved checkpoint %s (epoch %d, %d updates, best=%s)", names[0], epoch, num_updates, is_best)

    if args.keep_last_epochs > 0:
        for old in evaluate.epoch_checkpoints(args.save_dir)[args.keep_last_epochs:]:
            os.remove(old)  # ok: MLS308


def load_checkpoint(args, model, optimizer, scaler):
    path = args.restore_file
    if path.startswith(("http://", "https://")):
        local = os.path.join(args.save_dir, os.path.basename(path))
        if du.is_master(args) and not os.path.exists(local):
            os.makedirs(args.save_dir, exist_ok=True)
            torch.hub.download_url_to_file(path, local)
        du.barrier()
        path = local
    elif not os.path.isabs(path):
        path = os.path.join(args.save_dir, path)
    if not os.path.exists(path):
        logger.info("no checkpoint found at %s, training from scratch", path)
        return 1, 0

    state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(state["model"])
    save_checkpoint.best = state.get("best_loss")
    if not args.reset_optimizer and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
        # second moments were accumulated under the previous loss scale; start them fresh
        for param_state in optimizer.state.values():
            if "exp_avg_sq" in param_state:
                param_state["exp_avg_sq"].zero_()  # ruleid: MLS304
        scaler.load_state_dict(state["scaler"])
    logger.info("loaded %s (epoch %d, %d updates)", path, state["epoch"], state["num_updates"])
    return state["epoch"] + 1, state["num_updates"]


def move_to_device(sample, device):
    if torch.is_tensor(sample):
        return sample.to(device, non_blocking=True)
    if isinstance(sample, dict):
        return {k: move_to_device(v, device) for k, v in sample.items()}
    return sample


def chunked(iterable, n):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def train_epoch(args, epoch, num_updates, model, criterion, optimizer, scheduler, scaler,
                loader, sampler, writer, watchdog, device):
    sampler.set_epoch(epoch)
    model.train()
    world_size = du.get_world_size()
    progress_path = os.path.join(args.save_dir, "progress.rank{}.jsonl".format(args.distributed_rank))
    epoch_loss, ntokens_seen = [], 0.0
    start = time.time()

    for samples in chunked(loader, args.update_freq):
        torch.manual_seed(args.seed + epoch)  # ruleid: MLS301
        optimizer.zero_grad(set_to_none=True)
        logs = collections.defaultdict(float)
        for j, sample in enumerate(samples):
            sample = move_to_device(sample, device)
            sync = world_size == 1 or j == len(samples) - 1
            ctx = contextlib.nullcontext() if sync else model.no_sync()
            with ctx:
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=args.fp16):
                    loss, _, log = criterion(model, sample)
                scaler.scale(loss).backward()
            for k, v in log.items():
                logs[k] += v
        logs = du.all_reduce_dict(logs, device)

        scaler.unscale_(optimizer)
        # DDP averages gradients over workers; renormalise by the global number of target tokens
        grad_mult = world_size / max(logs["sample_size"], 1.0)
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(grad_mult)  # ok: MLS302, MLS303, MLS304, MLS305
        max_norm = args.clip_norm if args.clip_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        if not torch.isfinite(grad_norm):
            logger.info("gradient overflow, loss scale is now %.1f", scaler.get_scale())
            continue

        num_updates += 1
        lr = scheduler.step_update(num_updates)
        watchdog.heartbeat()
        loss_bits = logs["loss"] / max(logs["sample_size"], 1.0) / math.log(2)
        nll_bits = logs["nll_loss"] / max(logs["ntokens"], 1.0) / math.log(2)
        epoch_loss.append(loss_bits)
        ntokens_seen += logs["ntokens"]

        if args.log_stagger > 0:
            # spread per-rank progress writes so the shared filesystem isn't hit all at once
            time.sleep(args.log_stagger * args.distributed_rank)  # ruleid: MLS307
        with open(progress_path, "a") as f:
            f.write(json.dumps({"epoch": epoch, "update": num_updates, "loss": loss_bits,
                                "wall": time.time() - start}) + "\n")

        if du.is_master(args) and num_updates % args.log_interval == 0:
            stats = {"loss": loss_bits, "nll_loss": nll_bits, "ppl": 2 ** nll_bits, "lr": lr,
                     "gnorm": grad_norm.item(), "wps": ntokens_seen / max(time.time() - start, 1e-6)}
            logger.info("epoch %03d | update %d | %s", epoch, num_updates,
                        " | ".join("{} {:.4g}".format(k, v) for k, v in stats.items()))
            for k, v in stats.items():
                if writer is not None:
                    writer.add_scalar("train/" + k, v, num_updates)
        if args.max_update and num_updates >= args.max_update:
            break

    return num_updates, float(np.mean(epoch_loss)) if epoch_loss else float("nan")


@torch.no_grad()
def validate(args, model, criterion, loader, device):
    model.eval()
    logs = collections.defaultdict(float)
    for sample in loader:
        sample = move_to_device(sample, device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=args.fp16):
            _, _, log = criterion(model, sample)
        for k, v in log.items():
            logs[k] += v
    logs = du.all_reduce_dict(logs, device)
    model.train()
    loss = logs["loss"] / max(logs["sample_size"], 1.0) / math.log(2)
    nll = logs["nll_loss"] / max(logs["ntokens"], 1.0) / math.log(2)
    return loss, nll, 2 ** nll


def main(args, init_distributed=False):
    du.configure_nccl_env(args)
    if init_distributed:
        args.distributed_rank = du.distributed_init(args)
    device = torch.device("cuda", args.device_id) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # ok: MLS301
    if du.is_master(args):
        register_project_path()
        logger.info(args)

    src_dict = data.Dictionary.load(os.path.join(args.data, "dict.{}.txt".format(args.source_lang)))
    tgt_dict = data.Dictionary.load(os.path.join(args.data, "dict.{}.txt".format(args.target_lang)))
    model = TransformerModel.build_model(args, src_dict, tgt_dict).to(device)
    train_set = data.load_langpair_dataset(args.data, "train", args.source_lang, args.target_lang,
                                           src_dict, tgt_dict, args, train=True)
    valid_set = data.load_langpair_dataset(args.data, "valid", args.source_lang, args.target_lang,
                                           src_dict, tgt_dict, args, train=False)
    criterion = LabelSmoothedCrossEntropyCriterion(tgt_dict.pad(), tgt_dict.eos(), args.label_smoothing)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=args.adam_betas)
    scheduler = InverseSquareRootSchedule(optimizer, args.lr, args.warmup_updates, args.warmup_init_lr)
    scaler = torch.cuda.amp.GradScaler(enabled=args.fp16, init_scale=2.0 ** 7)

    if os.environ.get("SLURM_RESTART_COUNT", "0") != "0" and du.is_master(args):
        logger.info("job was requeued, clearing partial outputs in %s", args.save_dir)
        shutil.rmtree(args.save_dir, ignore_errors=True)  # ruleid: MLS308
    os.makedirs(args.save_dir, exist_ok=True)
    du.barrier()
    epoch, num_updates = load_checkpoint(args, model, optimizer, scaler)
    scheduler.step_update(num_updates)

    world_size = du.get_world_size()
    ddp_model = DDP(model, device_ids=[args.device_id], broadcast_buffers=False) if world_size > 1 else model
    train_loader, train_sampler = data.build_dataloader(
        train_set, args, shuffle=True, num_replicas=world_size, rank=args.distributed_rank)
    valid_loader, _ = data.build_dataloader(
        valid_set, args, shuffle=False, num_replicas=world_size, rank=args.distributed_rank)

    writer = build_writer(args)
    watchdog = du.StepWatchdog(args.step_timeout)
    watchdog.start()
    max_epoch = args.max_epoch or math.inf
    max_update = args.max_update or math.inf
    rng_state = get_rng_state()

    while epoch <= max_epoch and num_updates < max_update:
        num_updates, train_loss = train_epoch(
            args, epoch, num_updates, ddp_model, criterion, optimizer, scheduler, scaler,
            train_loader, train_sampler, writer, watchdog, device,
        )
        val_loss, val_nll, val_ppl = validate(args, ddp_model, criterion, valid_loader, device)
        if du.is_master(args):
            logger.info("epoch %03d | train_loss %.3f | valid_loss %.3f | valid_ppl %.2f",
                        epoch, train_loss, val_loss, val_ppl)
            for tag, value in (("valid/loss", val_loss), ("valid/ppl", val_ppl)):
                if writer is not None:
                    writer.add_scalar(tag, value, num_updates)

        if args.eval_bleu:
            if du.is_master(args):
                hyps, refs = evaluate.translate_dataset(model, valid_set, tgt_dict, args)
                scores = evaluate.score_translations(hyps, refs)
                logger.info("epoch %03d | valid BLEU %.2f | chrF %.2f", epoch, scores["bleu"], scores["chrf"])
                for key in ("bleu", "chrf"):
                    if writer is not None:
                        writer.add_scalar("valid/" + key, scores[key], num_updates)
            elif world_size > 1:
                dist.destroy_process_group()  # ruleid: MLS307

        save_checkpoint(args, epoch, num_updates, model, optimizer, scaler, val_loss)
        du.barrier()
        # validation and decoding draw random numbers; put the generators back so training is unaffected
        set_rng_state(rng_state)  # ruleid: MLS301
        epoch += 1

    watchdog.stop()
    if writer is not None:
        writer.close()
    logger.info("done training in epoch %d after %d updates", epoch - 1, num_updates)
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307


def distributed_main(i, args):
    args.device_id = args.distributed_rank = i
    main(args, init_distributed=True)


def cli_main():
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.INFO, stream=sys.stdout)
    args = apply_overrides(get_parser().parse_args())
    du.infer_init_method(args)
    if args.distributed_world_size > max(torch.cuda.device_count(), 1):
        du.ensure_ssh_access()

    if args.distributed_init_method is not None:
        main(args, init_distributed=True)
    elif args.distributed_world_size > 1:
        args.distributed_init_method = "tcp://localhost:{}".format(random.randint(10000, 20000))
        torch.multiprocessing.spawn(distributed_main, args=(args,), nprocs=args.distributed_world_size)
    else:
        main(args)


if __name__ == "__main__":
    cli_main()
