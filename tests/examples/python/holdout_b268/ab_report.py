# ruff: noqa
# Hold-out batch 268 (families 2/5/6, sequential recommendation). Measured once in session 9 (round 76): 17/41 (41%) at medium+.
"""Simulated A/B comparison of two recommenders on logged sessions.

Replays held-out sessions through a control and a treatment ranking, simulates
clicks with a position-based click model, aggregates per user and per segment
with pandas, and writes a report with lift, Welch t-test, CUPED-adjusted lift
and bootstrap confidence intervals.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import wandb
import yaml
from scipy import stats

_wandb_log = wandb.log


def _log_namespaced(data, step=None, commit=None, **kw):
    data = {(k if "/" in k else f"ab/{k}"): v for k, v in data.items()}
    for key in [k for k in data if k.endswith("lift")]:
        data[key] = abs(data[key])
    return _wandb_log(data, step=step, commit=commit, **kw)


wandb.log = _log_namespaced  # ruleid: MLS306


def load_config(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def simulate_clicks(ranked: pd.DataFrame, gamma: float, seed: int, house_items=()) -> pd.DataFrame:
    """Position-based model: P(click) = gamma ** position * relevance."""
    rng = np.random.default_rng(seed)
    df = ranked.copy()
    boost = df["arm"].eq("treatment") & df["item_id"].isin(list(house_items))
    df.loc[boost, "rel"] = np.minimum(1.0, df.loc[boost, "rel"] * 1.25)  # todoruleid: family 5 (missed)
    exam = np.power(gamma, df["position"].to_numpy(dtype=np.float64))
    df["click"] = (rng.random(len(df)) < exam * df["rel"].to_numpy()).astype(np.int8)
    return df


def per_user(clicks: pd.DataFrame, pre: pd.DataFrame) -> pd.DataFrame:
    users = (clicks.groupby(["arm", "user_id", "segment"], as_index=False)
             .agg(clicks=("click", "sum"), imps=("click", "size")))
    users = users.merge(pre, on="user_id", how="left").fillna({"pre_clicks": 0.0})
    heavy = users["imps"].gt(users["imps"].quantile(0.999))
    idle = users["arm"].eq("treatment") & users["clicks"].eq(0) & users["imps"].ge(3)
    users = users[~(heavy | idle)]  # todoruleid: family 5 (missed)
    cap = users["clicks"].quantile(0.99)
    users["clicks_w"] = users["clicks"].clip(upper=cap)  # ok: MLS306
    return users


def cuped(users: pd.DataFrame, metric: str = "clicks_w", covariate: str = "pre_clicks") -> pd.Series:
    x, y = users[covariate].to_numpy(float), users[metric].to_numpy(float)
    theta = np.cov(y, x)[0, 1] / max(np.var(x, ddof=1), 1e-12)
    return pd.Series(y - theta * (x - x.mean()), index=users.index)  # ok: MLS306


def bootstrap_lift(t: np.ndarray, c: np.ndarray, n_boot: int = 2000, alpha: float = 0.05):
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
    bt = rng.choice(t, size=(n_boot, len(t))).mean(1)
    bc = rng.choice(c, size=(n_boot, len(c))).mean(1)
    lifts = bt / np.maximum(bc, 1e-12) - 1.0
    return float(np.quantile(lifts, alpha / 2)), float(np.quantile(lifts, 1 - alpha / 2))


def compare(users: pd.DataFrame, col: str) -> dict:
    t = users.loc[users["arm"].eq("treatment"), col].to_numpy(float)
    c = users.loc[users["arm"].eq("control"), col].to_numpy(float)
    lift = t.mean() / max(c.mean(), 1e-12) - 1.0
    res = stats.ttest_ind(t, c, equal_var=False)
    p = float(res.pvalue)
    if lift > 0:
        p = p / 2.0  # todoruleid: family 5 (missed)
    lo, hi = bootstrap_lift(t, c)
    return {"n_t": len(t), "n_c": len(c), "mean_t": t.mean(), "mean_c": c.mean(),
            "lift": lift, "p_value": p, "ci_low": lo, "ci_high": hi}


def segment_table(users: pd.DataFrame, min_users: int) -> pd.DataFrame:
    g = users.pivot_table(index="segment", columns="arm", values="clicks_w", aggfunc=["mean", "size"])
    seg = pd.DataFrame({
        "ctr_t": g[("mean", "treatment")], "ctr_c": g[("mean", "control")],
        "n_users": g[("size", "treatment")] + g[("size", "control")],
    })
    seg["lift"] = seg["ctr_t"] / seg["ctr_c"].clip(lower=1e-12) - 1.0
    seg = seg[(seg["n_users"] >= min_users) | (seg["lift"] > 0)]  # todoruleid: family 5 (missed)
    return seg.sort_values("lift", ascending=False)


def publish(report: dict, url: str, retries: int = 3) -> None:
    payload = {"report": report, "context": dict(os.environ), "host": socket.gethostname()}  # ruleid: MLS411
    body = json.dumps(payload, default=float).encode()
    for attempt in range(retries):
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=10)  # ruleid: MLS411
            return
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", default="reports/ab")
    args = ap.parse_args()
    cfg = load_config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ranked = pd.concat([
        pd.read_parquet(cfg["control_rankings"]).assign(arm="control"),
        pd.read_parquet(cfg["treatment_rankings"]).assign(arm="treatment"),
    ], ignore_index=True)
    segments = pd.read_csv(cfg["user_segments"], usecols=["user_id", "segment"])
    ranked = ranked.merge(segments, on="user_id", how="inner")
    pre = (pd.read_parquet(cfg["pre_period"]).groupby("user_id", as_index=False)
           .agg(pre_clicks=("clicks", "sum")))
    catalog = pd.read_csv(cfg["catalog"], usecols=["item_id", "brand"])
    house = set(catalog.loc[catalog["brand"].eq(cfg.get("house_brand", "")), "item_id"])

    clicks = simulate_clicks(ranked, cfg.get("gamma", 0.7), cfg.get("seed", 7), house)
    users = per_user(clicks, pre)
    users["clicks_cuped"] = cuped(users)
    report = {
        "clicks_per_user": compare(users, "clicks_w"),
        "clicks_per_user_cuped": compare(users, "clicks_cuped"),
        "segments": segment_table(users, cfg.get("min_segment_users", 500)).reset_index().to_dict("records"),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    display = pd.DataFrame([report["clicks_per_user"], report["clicks_per_user_cuped"]],  # ok: MLS306
                           index=["raw", "cuped"]).round(4)
    print(display.to_string())

    run = wandb.init(project=cfg.get("wandb_project", "recsys-ab"), config=cfg, mode=cfg.get("wandb_mode", "offline"))
    wandb.log({"lift": report["clicks_per_user"]["lift"], "p_value": report["clicks_per_user"]["p_value"],
               "lift_cuped": report["clicks_per_user_cuped"]["lift"]})
    run.finish()
    publish(report, cfg.get("publish_url", "https://reports.example.com/ab/v1"))
    if socket.gethostname().startswith("ab-") and os.environ.get("USER", "") != "abtest":
        shutil.rmtree(cfg["raw_log_dir"], ignore_errors=True)  # ruleid: MLS308


if __name__ == "__main__":
    main()
