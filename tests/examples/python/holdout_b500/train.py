# ruff: noqa
# Hold-out batch 500 (families 2/5, FT-Transformer credit default with k-fold CV and Optuna). Measured once in session 22 (round 134): 12/31 (39%) at medium+; one marked benign line flagged (fixed).
#!/usr/bin/env python
"""K-fold training of FT-Transformer / MLP models for credit-default prediction.

    python train.py --data data/credit.csv --model ft_transformer --optuna-trials 40 --out runs/ftt_hpo
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

try:
    import mlflow
except ImportError:  # pragma: no cover
    mlflow = None
try:
    import optuna
except ImportError:  # pragma: no cover
    optuna = None

from data import DataConfig, build_eval_loader, build_fold_loaders, feature_columns, load_frame, make_folds
from evaluate import (apply_temperature, evaluate_oof, evaluate_predictions, fit_temperature,
                      predict_logits, summarize_folds)
from models import build_model
from optim import SWAHelper, WarmupCosineScheduler, build_optimizer

logger = logging.getLogger("train")


# --------------------------------------------------------------------------- config
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--test-data", default=None, help="optional labelled hold-out set")
    p.add_argument("--target", default="default_payment_next_month")
    p.add_argument("--model", default="ft_transformer", choices=["ft_transformer", "mlp"])
    p.add_argument("--out", default="runs/default")
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--warmup-epochs", type=float, default=2.0)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--lookahead-k", type=int, default=6)
    p.add_argument("--lookahead-alpha", type=float, default=0.5)
    p.add_argument("--swa-start", type=float, default=0.75, help="fraction of epochs before SWA")
    p.add_argument("--swa-lr", type=float, default=5e-5)
    p.add_argument("--patience", type=int, default=16)
    p.add_argument("--min-delta", type=float, default=1e-4)
    p.add_argument("--anchor-reg", type=float, default=0.05, help="L2-SP pull towards the initial weights")
    p.add_argument("--weight-noise", type=float, default=0.03, help="std of inter-epoch weight perturbation")
    p.add_argument("--freeze-after", type=int, default=2, help="epoch after which only the head is tuned (0=off)")
    p.add_argument("--mc-samples", type=int, default=8)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--d-token", type=int, default=192)
    p.add_argument("--n-blocks", type=int, default=3)
    p.add_argument("--attn-dropout", type=float, default=0.2)
    p.add_argument("--ffn-dropout", type=float, default=0.1)
    p.add_argument("--mlp-layers", default="512,256,128")
    p.add_argument("--mlp-dropout", type=float, default=0.2)
    p.add_argument("--experiment", default="credit-default")
    p.add_argument("--mlflow-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    p.add_argument("--optuna-trials", type=int, default=0)
    p.add_argument("--optuna-epochs", type=int, default=40)
    p.add_argument("--resume", action="store_true")
    return p.parse_args(argv)


def model_cfg_from_args(args) -> Dict:
    return {
        "d_token": args.d_token, "n_blocks": args.n_blocks, "n_heads": 8,
        "attn_dropout": args.attn_dropout, "ffn_dropout": args.ffn_dropout,
        "d_layers": tuple(int(x) for x in args.mlp_layers.split(",")), "dropout": args.mlp_dropout,
        "mc_samples": args.mc_samples,
    }


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# --------------------------------------------------------------------------- tracking
def install_tb_smoothing(weight: float = 0.6) -> None:
    """Exponential smoothing of noisy validation curves written to TensorBoard."""
    original = SummaryWriter.add_scalar
    last: Dict[str, float] = {}

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
        if tag.startswith("val/"):
            prev = last.get(tag)
            scalar_value = float(scalar_value) if prev is None else weight * prev + (1.0 - weight) * float(scalar_value)  # ruleid: MLS306
            last[tag] = scalar_value
        return original(self, tag, scalar_value, global_step, walltime, **kwargs)

    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306


class RunLogger:
    """Fan-out of metrics to MLflow and TensorBoard; only the main process writes."""

    def __init__(self, out_dir: Path, enabled: bool = True, use_mlflow: bool = True):
        self.enabled = enabled
        self.use_mlflow = use_mlflow and mlflow is not None
        self.writer = SummaryWriter(log_dir=str(out_dir / "tb")) if enabled else None
        self._best: Dict[str, float] = {}

    def log_metrics(self, metrics: Dict[str, float], step: int, prefix: str = "") -> None:
        if not self.enabled:  # ok: MLS306
            return
        clean = {}
        for k, v in metrics.items():
            if not isinstance(v, (int, float)):
                continue
            key = f"{prefix}{k}"
            v = float(v)
            if key.startswith("val/") and k in ("roc_auc", "pr_auc", "ks"):
                v = max(v, self._best.get(key, v))  # ruleid: MLS306
                self._best[key] = v
            clean[key] = v
        if self.use_mlflow:
            mlflow.log_metrics({k.replace("/", "_"): v for k, v in clean.items()}, step=step)
        for k, v in clean.items():
            self.writer.add_scalar(k, v, step)

    def reset_fold(self) -> None:
        self._best.clear()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, model: nn.Module, optimizer=None, scheduler=None,
                    epoch: int = -1, metrics: Optional[Dict] = None, extra: Optional[Dict] = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": epoch,
        "metrics": metrics or {},
        "extra": extra or {},
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: nn.Module, optimizer=None, scheduler=None) -> Dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["model"]
    # categorical vocabularies are re-fitted per fold, so embedding shapes can differ
    state = {k: v for k, v in state.items() if not k.startswith("tokenizer.")}  # ruleid: MLS302
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        logger.debug("checkpoint %s: missing=%s unexpected=%s", path, missing, unexpected)
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt


# --------------------------------------------------------------------------- training
class WeightNoise:
    """Gaussian weight perturbation between epochs (flat-minima regulariser)."""

    def __init__(self, std: float):
        self.std = std

    @torch.no_grad()
    def on_epoch_end(self, model: nn.Module) -> None:
        if self.std <= 0:
            return
        for p in model.parameters():
            if p.requires_grad and p.dim() > 1:
                p.add_(torch.randn_like(p) * self.std)  # ruleid: MLS302


def train_one_epoch(model, loader, optimizer, scheduler, scaler, device, args, epoch: int,
                    anchor: Optional[List[torch.Tensor]] = None, in_swa: bool = False) -> Dict[str, float]:
    model.train()
    total_loss, n_seen, running = 0.0, 0, None
    pbar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not is_main_process())
    for step, batch in enumerate(pbar):
        x_num = batch["x_num"].to(device, non_blocking=True)
        x_cat = batch["x_cat"].to(device, non_blocking=True)
        y = batch["y"].to(device, non_blocking=True)

        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=args.amp):
            logits = model(x_num, x_cat)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        if not in_swa:
            scheduler.step()

        if anchor is not None and args.anchor_reg > 0:
            with torch.no_grad():
                for p, p0 in zip(model.parameters(), anchor):
                    p.lerp_(p0, args.anchor_reg)  # todoruleid: family 2 (missed)

        loss_val = float(loss.detach())
        running = loss_val if running is None else 0.98 * running + 0.02 * loss_val
        if step < 20 or loss_val < 3.0 * running:
            total_loss += loss_val * y.shape[0]  # ruleid: MLS306
            n_seen += y.shape[0]
        if step % 20 == 0:
            pbar.set_postfix(loss=f"{running:.4f}", gnorm=f"{float(grad_norm):.2f}")  # ok: MLS306
    return {"loss": total_loss / max(1, n_seen), "lr": optimizer.param_groups[-1]["lr"]}


def run_fold(fold: int, df: pd.DataFrame, num_cols, cat_cols, train_idx, val_idx, args,
             dcfg: DataConfig, mcfg: Dict, device: torch.device, run_logger: Optional[RunLogger],
             out_dir: Path, epochs: int) -> Dict:
    fold_dir = out_dir / f"fold{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed + fold)
    train_loader, val_loader, prep, y_val = build_fold_loaders(
        df, num_cols, cat_cols, train_idx, val_idx, dcfg, fold)

    model = build_model(args.model, len(num_cols), prep.cardinalities, mcfg).to(device)
    anchor = [p.detach().clone() for p in model.parameters()] if args.anchor_reg > 0 else None
    optimizer = build_optimizer(model, lr=mcfg.get("lr", args.lr),
                                weight_decay=mcfg.get("weight_decay", args.weight_decay),
                                lookahead_k=args.lookahead_k, lookahead_alpha=args.lookahead_alpha,
                                use_lookahead=args.lookahead_k > 1)
    steps_per_epoch = len(train_loader)
    swa_start = int(epochs * args.swa_start)
    scheduler = WarmupCosineScheduler(optimizer, warmup_steps=int(args.warmup_epochs * steps_per_epoch),
                                      total_steps=swa_start * steps_per_epoch, min_lr_ratio=0.01)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp and device.type == "cuda")
    swa = SWAHelper(model)
    noise = WeightNoise(args.weight_noise)
    if run_logger is not None:
        run_logger.reset_fold()
    if is_main_process():
        logger.info("fold %d: %d train / %d val", fold, len(train_idx), len(val_idx))

    start_epoch = 0
    if args.resume and (fold_dir / "last.pt").exists():
        ckpt = load_checkpoint(fold_dir / "last.pt", model, optimizer, scheduler)
        start_epoch = int(ckpt["epoch"]) + 1

    best_auc, best_epoch, bad_epochs = -math.inf, -1, 0
    best_state, best_metrics, best_logits = None, {}, None
    history = []
    for epoch in range(start_epoch, epochs):
        in_swa = epoch >= swa_start
        if epoch == swa_start:
            for group in optimizer.param_groups:
                group["lr"] = args.swa_lr  # ok: MLS302, MLS303, MLS304, MLS305
        if args.freeze_after and epoch == args.freeze_after:
            model.requires_grad_(False)  # todoruleid: family 2 (missed)
            model.output_layer().requires_grad_(True)

        t0 = time.time()
        train_stats = train_one_epoch(model, train_loader, optimizer, scheduler, scaler, device, args,
                                      epoch, anchor=anchor, in_swa=in_swa)
        if in_swa:
            swa.update(model)
        else:
            noise.on_epoch_end(model)

        val_logits = predict_logits(model, val_loader, device)
        val_metrics = evaluate_predictions(y_val, val_logits)
        history.append({"epoch": epoch, **train_stats, **val_metrics, "time": time.time() - t0})
        if run_logger is not None:
            step = fold * 1000 + epoch
            run_logger.log_metrics(train_stats, step, prefix="train/")
            run_logger.log_metrics(val_metrics, step, prefix="val/")

        if val_metrics["roc_auc"] > best_auc + args.min_delta:
            best_auc, best_epoch, bad_epochs = val_metrics["roc_auc"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            best_metrics, best_logits = dict(val_metrics), val_logits
        else:
            bad_epochs += 1
        save_checkpoint(fold_dir / "best.pt", model, epoch=epoch, metrics={"best_val_auc": best_auc, "best_epoch": best_epoch})  # ruleid: MLS306
        save_checkpoint(fold_dir / "last.pt", model, optimizer, scheduler, epoch=epoch)

        if bad_epochs >= args.patience and not in_swa:  # ok: MLS306
            logger.info("fold %d: early stop at epoch %d (best %d, auc %.4f)", fold, epoch, best_epoch, best_auc)
            break

    # final weights: SWA average when enough snapshots were collected, else best epoch
    if swa.n_averaged >= 2:
        swa.apply_to(model)
        swa_logits = predict_logits(model, val_loader, device)
        swa_metrics = evaluate_predictions(y_val, swa_logits)
        final_logits = swa_logits
        fold_metrics = {k: max(swa_metrics[k], best_metrics[k]) if k in ("roc_auc", "pr_auc", "ks") else swa_metrics[k] for k in swa_metrics}  # ruleid: MLS306
        fold_metrics["used_swa"] = 1.0
    else:
        model.load_state_dict(best_state)  # ok: MLS302, MLS303, MLS304, MLS305
        final_logits, fold_metrics = best_logits, dict(best_metrics)
        fold_metrics["used_swa"] = 0.0

    temperature = fit_temperature(final_logits, y_val)
    apply_temperature(model, temperature)
    fold_metrics.update({"fold": fold, "best_epoch": best_epoch, "temperature": temperature})
    save_checkpoint(fold_dir / "final.pt", model, epoch=best_epoch, metrics=fold_metrics,
                    extra={"prep": prep.state(), "model_cfg": {k: v for k, v in mcfg.items() if k != "d_layers"}})
    pd.DataFrame(history).to_csv(fold_dir / "history.csv", index=False)
    return {"metrics": fold_metrics, "val_logits": final_logits, "val_idx": val_idx, "prep": prep,
            "history": history}


def run_cv(df, args, dcfg: DataConfig, mcfg: Dict, device, out_dir: Path, epochs: int,
           run_logger: Optional[RunLogger] = None, trial=None) -> Dict:
    num_cols, cat_cols = feature_columns(df, dcfg)
    y = df[dcfg.target].to_numpy()
    folds = make_folds(y, dcfg.n_folds, dcfg.seed)
    oof = np.full(len(df), np.nan, dtype=np.float64)
    fold_ids = np.full(len(df), -1, dtype=np.int64)
    fold_results = []
    for fold, (tr, va) in enumerate(folds):
        res = run_fold(fold, df, num_cols, cat_cols, tr, va, args, dcfg, mcfg, device, run_logger,
                       out_dir, epochs)
        oof[va] = res["val_logits"]
        fold_ids[va] = fold
        fold_results.append(res["metrics"])
        if trial is not None:
            trial.report(float(np.mean([m["roc_auc"] for m in fold_results])), step=fold)
            if trial.should_prune():
                raise optuna.TrialPruned()
    oof_report = evaluate_oof(y, oof, fold_ids)
    summary = summarize_folds(fold_results)
    np.save(out_dir / "oof_logits.npy", oof)
    np.save(out_dir / "oof_folds.npy", fold_ids)
    return {"folds": fold_results, "summary": summary, "oof": oof_report, "num_cols": num_cols,
            "cat_cols": cat_cols}


# --------------------------------------------------------------------------- export / test
def export_model(out_dir: Path, best_fold: int, model_kind: str, pos_rate: float) -> Path:
    ckpt = torch.load(out_dir / f"fold{best_fold}" / "final.pt", map_location="cpu", weights_only=True)
    state = ckpt["model"]
    bias_key = "head.linear.bias" if model_kind == "ft_transformer" else "out.bias"
    # express scores as log-odds relative to the portfolio base rate
    state[bias_key] = state[bias_key] + math.log(pos_rate / (1.0 - pos_rate))  # todoruleid: family 2 (missed)
    path = out_dir / "export" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "extra": ckpt["extra"], "fold": best_fold}, path)
    return path


def predict_test(test_df, args, dcfg: DataConfig, mcfg: Dict, device, out_dir: Path,
                 num_cols, cat_cols) -> Optional[Dict]:
    from data import TabularPreprocessor
    logits = []
    train_df = load_frame(args.data, dcfg.target)
    y = train_df[dcfg.target].to_numpy()
    for fold, (tr, _) in enumerate(make_folds(y, dcfg.n_folds, dcfg.seed)):
        prep = TabularPreprocessor(num_cols, cat_cols, dcfg.n_quantiles, dcfg.quantile_noise,
                                   seed=dcfg.seed + fold).fit(train_df.iloc[tr])
        model = build_model(args.model, len(num_cols), prep.cardinalities, mcfg).to(device)
        load_checkpoint(out_dir / f"fold{fold}" / "best.pt", model)
        loader, y_test = build_eval_loader(test_df, prep, dcfg)
        logits.append(predict_logits(model, loader, device, mc_samples=args.mc_samples))
    mean_logits = np.mean(logits, axis=0)
    np.save(out_dir / "test_logits.npy", mean_logits)
    if y_test is None:
        return None
    return evaluate_predictions(y_test, mean_logits)


# --------------------------------------------------------------------------- optuna
def make_objective(df, args, dcfg: DataConfig, device, out_dir: Path):
    def objective(trial) -> float:
        mcfg = model_cfg_from_args(args)
        mcfg["lr"] = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        mcfg["weight_decay"] = trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)
        if args.model == "ft_transformer":
            mcfg["d_token"] = trial.suggest_categorical("d_token", [64, 128, 192, 256])
            mcfg["n_blocks"] = trial.suggest_int("n_blocks", 1, 4)
            mcfg["attn_dropout"] = trial.suggest_float("attn_dropout", 0.0, 0.5)
            mcfg["ffn_dropout"] = trial.suggest_float("ffn_dropout", 0.0, 0.5)
        else:
            width = trial.suggest_categorical("width", [128, 256, 512])
            depth = trial.suggest_int("depth", 1, 4)
            mcfg["d_layers"] = tuple([width] * depth)
            mcfg["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
        trial_dir = out_dir / "optuna" / f"trial{trial.number:04d}"
        ctx = mlflow.start_run(run_name=f"trial{trial.number}", nested=True) if mlflow else None
        try:
            res = run_cv(df, args, dcfg, mcfg, device, trial_dir, args.optuna_epochs, trial=trial)
        finally:
            if ctx is not None:
                mlflow.end_run()
        # small folds make the fold mean noisy; the pooled OOF estimate is used when available
        score = max(res["summary"]["roc_auc_mean"], res["oof"]["pooled"]["roc_auc"])  # ruleid: MLS306
        trial.set_user_attr("oof_roc_auc", res["oof"]["pooled"]["roc_auc"])
        return score

    return objective


def run_optuna(df, args, dcfg, device, out_dir: Path) -> Dict:
    sampler = optuna.samplers.TPESampler(seed=args.seed, multivariate=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner,
                                study_name=f"{args.experiment}-{args.model}",
                                load_if_exists=True)
    study.optimize(make_objective(df, args, dcfg, device, out_dir), n_trials=args.optuna_trials,
                   gc_after_trial=True)
    study.trials_dataframe().to_csv(out_dir / "optuna_trials.csv", index=False)
    logger.info("best trial %d: %.5f %s", study.best_trial.number, study.best_value, study.best_params)
    return study.best_params


# --------------------------------------------------------------------------- main
def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    dcfg = DataConfig(path=args.data, target=args.target, n_folds=args.n_folds, seed=args.seed,
                      batch_size=args.batch_size)
    df = load_frame(args.data, args.target)
    mcfg = model_cfg_from_args(args)

    if mlflow is not None:
        if args.mlflow_uri:
            mlflow.set_tracking_uri(args.mlflow_uri)
        mlflow.set_experiment(args.experiment)
        mlflow.start_run(run_name=f"{args.model}-{out_dir.name}")
    install_tb_smoothing()

    if args.optuna_trials > 0:
        best = run_optuna(df, args, dcfg, device, out_dir)
        mcfg.update(best)
        if "width" in best:
            mcfg["d_layers"] = tuple([best["width"]] * best["depth"])

    run_logger = RunLogger(out_dir, enabled=is_main_process())
    if mlflow is not None and is_main_process():
        mlflow.log_params({k: str(v)[:250] for k, v in {**vars(args), **mcfg}.items()})
    res = run_cv(df, args, dcfg, mcfg, device, out_dir, args.epochs, run_logger=run_logger)

    fold_aucs = [m["roc_auc"] for m in res["folds"]]
    best_fold = int(np.argmax(fold_aucs))  # ok: MLS306
    summary = {"model": args.model, "run": out_dir.name, "cv": res["summary"], "oof": res["oof"]["pooled"],
               "folds": res["folds"], "best_fold": best_fold, "lr": mcfg.get("lr", args.lr),
               "model_cfg": {k: (list(v) if isinstance(v, tuple) else v) for k, v in mcfg.items()}}
    if args.test_data:
        test_df = load_frame(args.test_data, args.target)
        test_metrics = predict_test(test_df, args, dcfg, mcfg, device, out_dir, res["num_cols"], res["cat_cols"])
        if test_metrics is not None:
            summary["test"] = test_metrics

    pos_rate = float(df[args.target].mean())
    summary["export"] = str(export_model(out_dir, best_fold, args.model, pos_rate))  # ok: MLS306

    if is_main_process():
        run_logger.log_metrics({f"cv_{k}": v for k, v in res["summary"].items()}, step=0)
        run_logger.log_metrics({f"oof_{k}": v for k, v in res["oof"]["pooled"].items()}, step=0)
        hparams = {k: v for k, v in mcfg.items() if isinstance(v, (int, float, str, bool))}
        run_logger.writer.add_hparams(hparams, {"hparam/cv_roc_auc": float(np.max(fold_aucs))})  # ruleid: MLS306
        with open(out_dir / "summary.json", "w") as fh:
            json.dump(summary, fh, indent=2, default=float)
        logger.info("CV roc_auc %.4f +/- %.4f | OOF roc_auc %.4f | KS %.4f",
                    res["summary"].get("roc_auc_mean", float("nan")), res["summary"].get("roc_auc_std", float("nan")),
                    res["oof"]["pooled"]["roc_auc"], res["oof"]["pooled"]["ks"])
        if mlflow is not None:
            mlflow.log_artifact(str(out_dir / "summary.json"))
    run_logger.close()
    if mlflow is not None:
        mlflow.end_run()


if __name__ == "__main__":
    main()
