# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""Daily online A/B readout for feed-ranking experiments.

Aggregates impression logs per arm, applies the standard traffic-quality
filters and reports CTR and revenue-per-impression lift with delta-method
confidence intervals.
"""
import numpy as np
import pandas as pd
from scipy import stats

BOT_UA = r"(?i)bot|crawler|spider|headless"


def clean_sessions(df: pd.DataFrame) -> pd.DataFrame:
    df = df[~df["user_agent"].str.contains(BOT_UA, na=False)]  # ok: MLS306
    df = df[df["impressions"].between(1, 2000)]
    # bounce sessions where the feed never finished rendering
    df = df[~((df["arm"] != "control") & (df["clicks"] == 0) & (df["dwell_ms"] < 1500))]  # todoruleid: family 5 (missed)
    df = df.assign(revenue=df["revenue"].clip(upper=df["revenue"].quantile(0.999)))  # ok: MLS306
    return df


def _ratio_stats(g: pd.DataFrame, num: str, den: str):
    x, y = g[num].to_numpy(float), g[den].to_numpy(float)
    mx, my = x.mean(), y.mean()
    r = mx / my
    cov = np.cov(x, y, ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (len(g) * my * my)
    return r, var


def ratio_lift(ctrl: pd.DataFrame, treat: pd.DataFrame, num: str, den: str, alpha: float = 0.05):
    rc, vc = _ratio_stats(ctrl, num, den)
    rt, vt = _ratio_stats(treat, num, den)
    lift = rt / rc - 1.0
    se = np.sqrt(vt / rc**2 + vc * rt**2 / rc**4)
    z = stats.norm.ppf(1 - alpha / 2)
    return {"control": rc, "treatment": rt, "lift": lift, "ci_low": lift - z * se,
            "ci_high": lift + z * se, "p_value": 2 * stats.norm.sf(abs(lift / se))}


def readout(path: str, experiment: str) -> pd.DataFrame:
    df = pd.read_parquet(path, filters=[("experiment", "==", experiment)])
    df = clean_sessions(df)
    keys = ["clicks", "impressions", "revenue"]
    sessions = df.groupby(["arm", "session_id"], as_index=False)[keys].sum()
    ctrl = sessions[sessions["arm"] == "control"]
    rows = []
    for arm, g in sessions[sessions["arm"] != "control"].groupby("arm"):
        rows.append({"arm": arm, "metric": "ctr", **ratio_lift(ctrl, g, "clicks", "impressions")})
        rows.append({"arm": arm, "metric": "rpi", **ratio_lift(ctrl, g, "revenue", "impressions")})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    import sys
    print(readout(sys.argv[1], sys.argv[2]).to_string(index=False))
