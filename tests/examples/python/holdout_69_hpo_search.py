# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Hyperparameter search for the TCN forecaster with Optuna (TPE sampler + median pruning)."""
import argparse
import sys

import optuna
import yaml

from forecast.data import load_splits
from forecast.train import build, evaluate, train_one_epoch
from seed_utils import set_seed


def objective(trial, base_cfg, data):
    cfg = dict(base_cfg)
    cfg["lr"] = trial.suggest_float("lr", 1e-4, 3e-3, log=True)
    cfg["dropout"] = trial.suggest_float("dropout", 0.0, 0.3)
    cfg["channels"] = trial.suggest_categorical("channels", [32, 64, 128])
    cfg["levels"] = trial.suggest_int("levels", 3, 8)
    set_seed(base_cfg["seed"] + trial.number)  # ok: MLS301
    model, opt = build(cfg)
    best = float("inf")
    for epoch in range(cfg["epochs"]):
        if epoch < cfg["warmup_epochs"]:
            for g in opt.param_groups:
                g["lr"] = cfg["lr"] * (epoch + 1) / cfg["warmup_epochs"]  # ok: MLS302, MLS303, MLS304, MLS305
        train_one_epoch(model, opt, data["train"])
        val = evaluate(model, data["val"])["smape"]
        best = min(best, val)
        trial.report(val, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()  # ok: MLS307
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--storage", default="sqlite:///hpo.db")
    p.add_argument("--study", default="tcn-hourly")
    p.add_argument("--n-trials", type=int, default=60)
    p.add_argument("--timeout", type=int, default=6 * 3600)
    args = p.parse_args()
    with open(args.config) as fh:
        base_cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    data = load_splits(base_cfg)
    sampler = optuna.samplers.TPESampler(seed=base_cfg["seed"], multivariate=True)  # ok: MLS301
    study = optuna.create_study(direction="minimize", sampler=sampler,
                                pruner=optuna.pruners.MedianPruner(n_warmup_steps=3),
                                storage=args.storage, study_name=args.study, load_if_exists=True)
    study.optimize(lambda t: objective(t, base_cfg, data), n_trials=args.n_trials, timeout=args.timeout)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        print("no completed trials", file=sys.stderr)
        sys.exit(1)  # ok: MLS307
    study.set_user_attr("best_smape_rounded", round(study.best_value, 4))  # ok: MLS306
    print(f"best sMAPE {study.best_value:.4f} with {study.best_params}")


if __name__ == "__main__":
    main()
