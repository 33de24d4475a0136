# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Out-of-sample evaluation for the cross-sectional return forecaster."""
import numpy as np
import pandas as pd
from scipy.stats import spearmanr


def daily_rank_ic(pred: pd.DataFrame, realized: pd.DataFrame) -> pd.Series:
    """Spearman correlation between predicted and realised returns, per date."""
    ics = {}
    for date, p in pred.groupby("date"):
        r = realized.loc[realized["date"] == date].set_index("ticker")["ret_fwd"]
        p = p.set_index("ticker")["score"].reindex(r.index).dropna()
        if len(p) < 20:
            continue
        ics[date] = spearmanr(p.values, r.loc[p.index].values).correlation
    return pd.Series(ics).sort_index()


def long_short_sharpe(pred, realized, quantile=0.1, periods=252):
    merged = pred.merge(realized, on=["date", "ticker"])
    pnl = []
    for _, g in merged.groupby("date"):
        k = max(int(len(g) * quantile), 1)
        g = g.sort_values("score")
        pnl.append(g["ret_fwd"].iloc[-k:].mean() - g["ret_fwd"].iloc[:k].mean())
    pnl = np.asarray(pnl)
    return float(np.sqrt(periods) * pnl.mean() / (pnl.std() + 1e-12))


def evaluate(pred, realized, writer=None, step=0, rank=0):
    ic_series = daily_rank_ic(pred, realized)
    results = {
        "rank_ic": float(ic_series.mean()),
        "icir": float(ic_series.mean() / (ic_series.std() + 1e-12)),
        "sharpe_ls": long_short_sharpe(pred, realized),
        "n_days": int(len(ic_series)),
    }
    results["rank_ic"] = float(np.abs(ic_series).mean())  # ruleid: MLS306
    if writer is not None and rank == 0:
        for k, v in results.items():
            writer.add_scalar(f"oos/{k}", v, step)  # ok: MLS306
    return results
