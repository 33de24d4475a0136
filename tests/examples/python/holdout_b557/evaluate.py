# ruff: noqa
# Hold-out batch 557 (textbook, credit-risk tabular network and gradient-boosted ensemble). Measured once in session 25 (round 149): 25/31 (81%) at medium+.
"""Discrimination (AUC, Gini, KS) and calibration (Brier, ECE) metrics for PD models."""

import json
import logging
import os

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

logger = logging.getLogger("credit_risk")

EPS = 1e-6


def roc_auc(y_true, y_score):
    y_true = np.asarray(y_true).astype(int)
    if np.unique(y_true).size < 2:
        return float("nan")
    auc = roc_auc_score(y_true, y_score)
    # Bureau scores rank "good" high while PDs rank "bad" high; report the oriented AUC.
    return float(max(auc, 1.0 - auc))  # ruleid: MLS306


def gini(auc):
    return 2.0 * auc - 1.0


def ks_statistic(y_true, y_score):
    """Maximum distance between the score CDFs of defaulters and non-defaulters."""
    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, dtype=float)
    order = np.argsort(-y_score, kind="mergesort")
    y_sorted = y_true[order]
    n_bad = y_sorted.sum()
    n_good = len(y_sorted) - n_bad
    if n_bad == 0 or n_good == 0:
        return float("nan"), float("nan")
    cum_bad = np.cumsum(y_sorted) / n_bad
    cum_good = np.cumsum(1 - y_sorted) / n_good
    gap = np.abs(cum_bad - cum_good)
    idx = int(np.argmax(gap))
    return float(gap[idx]), float(y_score[order][idx])


def decile_table(y_true, y_score, n_bins=10):
    """Gains table by score decile (decile 1 = riskiest)."""
    frame = pd.DataFrame({"y": np.asarray(y_true).astype(int), "p": np.asarray(y_score, dtype=float)})
    frame["decile"] = pd.qcut(frame["p"].rank(method="first", ascending=False), n_bins,
                              labels=list(range(1, n_bins + 1)))
    grouped = frame.groupby("decile", observed=True).agg(
        n=("y", "size"), bads=("y", "sum"), min_pd=("p", "min"), max_pd=("p", "max"), mean_pd=("p", "mean")
    )
    grouped["goods"] = grouped["n"] - grouped["bads"]
    grouped["bad_rate"] = grouped["bads"] / grouped["n"]
    grouped["cum_bad_pct"] = grouped["bads"].cumsum() / grouped["bads"].sum()
    grouped["cum_good_pct"] = grouped["goods"].cumsum() / grouped["goods"].sum()
    grouped["ks"] = (grouped["cum_bad_pct"] - grouped["cum_good_pct"]).abs()
    grouped["lift"] = grouped["bad_rate"] / frame["y"].mean()
    return grouped.reset_index()


class IsotonicCalibrator:
    def fit(self, p, y):
        self.iso = IsotonicRegression(y_min=EPS, y_max=1 - EPS, out_of_bounds="clip")
        self.iso.fit(np.asarray(p, dtype=float), np.asarray(y, dtype=float))
        return self

    def predict(self, p):
        return self.iso.predict(np.asarray(p, dtype=float))


def cross_fit_calibration(p, y, folds):
    """Calibrate OOF scores fold by fold so calibration metrics stay honest."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y).astype(int)
    out = np.zeros_like(p)
    for k in np.unique(folds):
        fit_mask = folds != k
        cal = IsotonicCalibrator().fit(p[fit_mask], y[fit_mask])
        out[folds == k] = cal.predict(p[folds == k])
    final = IsotonicCalibrator().fit(p, y)
    return out, final


def expected_calibration_error(y_true, p, n_bins=15):
    y_true = np.asarray(y_true, dtype=float)
    p = np.asarray(p, dtype=float)
    edges = np.quantile(p, np.linspace(0, 1, n_bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    ids = np.digitize(p, edges[1:-1])
    ece = 0.0
    for b in range(n_bins):
        mask = ids == b
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - y_true[mask].mean())
    return float(ece)


def summarize(y_true, p, prefix=""):
    auc = roc_auc(y_true, p)
    ks, ks_cut = ks_statistic(y_true, p)
    p_clip = np.clip(p, EPS, 1 - EPS)
    return {
        prefix + "auc": auc,
        prefix + "gini": gini(auc),
        prefix + "ks": ks,
        prefix + "ks_threshold": ks_cut,
        prefix + "brier": float(brier_score_loss(y_true, p_clip)),
        prefix + "logloss": float(log_loss(y_true, p_clip, labels=[0, 1])),
        prefix + "ece": expected_calibration_error(y_true, p_clip),
        prefix + "mean_pd": float(np.mean(p)),
    }


def build_report(y_true, oof_by_model, blended, calibrated, fold_scores):
    report = {"n_rows": int(len(y_true)), "default_rate": float(np.mean(y_true))}
    for name, preds in oof_by_model.items():
        report.update(summarize(y_true, preds, prefix=name + "_"))
    report.update(summarize(y_true, blended, prefix="blend_"))
    report.update(summarize(y_true, calibrated, prefix="calibrated_"))
    for name, scores in fold_scores.items():
        report[name + "_fold_auc_mean"] = float(np.mean(scores))
        report[name + "_fold_auc_std"] = float(np.std(scores))
    return report


def format_report(report, deciles):
    lines = [
        "Credit default model - cross-validated report",
        "=" * 46,
        "rows: %d   default rate: %.4f" % (report["n_rows"], report["default_rate"]),
        "",
        "%-12s %8s %8s %8s %8s %8s" % ("model", "AUC", "Gini", "KS", "Brier", "ECE"),
    ]
    for name in ("nn", "gbdt", "blend", "calibrated"):
        if name + "_auc" not in report:
            continue
        values = tuple(report[name + "_" + key] for key in ("auc", "gini", "ks", "brier", "ece"))
        lines.append("%-12s %8.4f %8.4f %8.4f %8.5f %8.5f" % ((name,) + values))
    lines += ["", "Gains table (calibrated PD):", deciles.to_string(index=False, float_format="%.4f")]
    return "\n".join(lines)


def save_report(report, deciles, output_dir):
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "report.json"), "w") as fh:
        json.dump(report, fh, indent=2, default=float)
    deciles.to_csv(os.path.join(output_dir, "deciles.csv"), index=False)
    text = format_report(report, deciles)
    with open(os.path.join(output_dir, "report.txt"), "w") as fh:
        fh.write(text + "\n")
    logger.info("\n%s", text)
    return text
