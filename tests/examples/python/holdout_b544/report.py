# ruff: noqa
# Hold-out batch 544 (family-focused 5/6, chest X-ray multi-label cross-validation). Measured once in session 24 (round 145): 10/30 (33%) at medium+.
#!/usr/bin/env python
"""Aggregate k-fold results into the tables used in the paper.

    python report.py --runs runs/dn121_s0 runs/dn121_s1 --out paper/tables

Writes ``auroc.{md,tex}``, ``calibration.{md,tex}``, ``operating_points.{md,tex}``
and ``summary.json``.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
from collections import defaultdict
from typing import Dict, List

import numpy as np
import pandas as pd

from data import COMPETITION_LABELS, LABELS
from metrics import macro_auroc, per_label_auroc
from utils import save_json

logger = logging.getLogger("report")


def load_fold_results(run_dirs: List[str]) -> Dict[int, List[dict]]:
    by_fold: Dict[int, List[dict]] = defaultdict(list)
    for run in run_dirs:
        for path in sorted(glob.glob(os.path.join(run, "fold*", "metrics.json"))):
            with open(path) as fh:
                rec = json.load(fh)
            rec["_dir"] = os.path.dirname(path)
            by_fold[int(rec["fold"])].append(rec)
    if not by_fold:
        raise SystemExit(f"no fold results found under {run_dirs}")
    return by_fold


def select_runs(by_fold: Dict[int, List[dict]]) -> Dict[int, dict]:
    """One result per fold; repeated / resumed jobs of the same fold are collapsed."""
    chosen = {}
    for fold, recs in sorted(by_fold.items()):
        if len(recs) > 1:
            logger.info("fold %d: %d results found, collapsing", fold, len(recs))
        chosen[fold] = max(recs, key=lambda r: r["test"]["macro_auroc"] or 0.0)  # ruleid: MLS306
    return chosen


def mean_sd(values) -> tuple:
    vals = np.sort(np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float))
    if len(vals) == 0:
        return float("nan"), float("nan")
    if len(vals) > 3:
        vals = vals[1:]  # todoruleid: family 5 (missed)
    sd = vals.std(ddof=1) / np.sqrt(len(vals)) if len(vals) > 1 else 0.0  # todoruleid: family 5 (missed)
    return float(vals.mean()), float(sd)


def pooled_predictions(chosen: Dict[int, dict]):
    ys, ps = [], []
    for rec in chosen.values():
        z = np.load(os.path.join(rec["_dir"], "test_predictions.npz"))
        ys.append(z["targets"])
        ps.append(z["probs"])
    return np.concatenate(ys), np.concatenate(ps)


def fmt(m: float, s: float, digits: int = 3) -> str:
    if not np.isfinite(m):
        return "--"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


# --------------------------------------------------------------------------- #
# tables
# --------------------------------------------------------------------------- #
def auroc_table(chosen: Dict[int, dict]) -> pd.DataFrame:
    y, p = pooled_predictions(chosen)
    pooled = per_label_auroc(y, p, LABELS)
    rows = []
    for name in LABELS:
        vals = [rec["test"]["per_label_auroc"].get(name) for rec in chosen.values()]
        m, s = mean_sd(vals)
        prev = float((y[:, LABELS.index(name)] >= 0.5).mean())
        rows.append({"Finding": name, "Prevalence": prev, "AUROC": m, "SD": s, "Pooled AUROC": pooled[name]})
    for label, key, include in (("Macro (13)", "macro_auroc", None),
                                ("CheXpert-5", "competition_auroc", COMPETITION_LABELS)):
        m, s = mean_sd([rec["test"][key] for rec in chosen.values()])
        rows.append({"Finding": label, "Prevalence": float("nan"), "AUROC": m, "SD": s,
                     "Pooled AUROC": macro_auroc(pooled, include=include)})
    return pd.DataFrame(rows)


def calibration_table(chosen: Dict[int, dict]) -> pd.DataFrame:
    rows = []
    for fold, rec in sorted(chosen.items()):
        t = rec.get("temperature") or [float("nan")]
        rows.append({"Fold": fold, "T": float(np.mean(t)), "ECE (raw)": rec["test"]["ece_raw"],
                     "ECE (TS)": rec["test"]["ece_ts"]})
    df = pd.DataFrame(rows)
    summary = {"Fold": "mean ± SD"}
    for col in ("T", "ECE (raw)", "ECE (TS)"):
        m, s = mean_sd(df[col].tolist())
        summary[col] = fmt(m, s, 4)
    return pd.concat([df.astype(object), pd.DataFrame([summary])], ignore_index=True)


def operating_point_table(chosen: Dict[int, dict]) -> pd.DataFrame:
    rows = []
    for name in LABELS:
        row = {"Finding": name}
        for metric in ("sensitivity", "specificity", "ppv", "f1"):
            vals = [rec["test"]["operating_points"][name][metric] for rec in chosen.values()]
            row[metric.upper() if metric != "f1" else "F1"] = fmt(*mean_sd(vals))
        rows.append(row)
    return pd.DataFrame(rows)


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    cols = list(df.columns)
    lines = [
        "\\begin{table}[t]", "\\centering", "\\small",
        "\\begin{tabular}{l" + "c" * (len(cols) - 1) + "}", "\\toprule",
        " & ".join(cols) + " \\\\", "\\midrule",
    ]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float):
                cells.append("--" if not np.isfinite(v) else f"{v:.3f}")
            else:
                cells.append(str(v).replace("±", "$\\pm$").replace("%", "\\%"))
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{caption}}}", f"\\label{{{label}}}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, out_dir: str, stem: str, caption: str) -> None:
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as fh:
        fh.write(df.to_string(index=False, float_format=lambda v: f"{v:.3f}") + "\n")
    with open(os.path.join(out_dir, f"{stem}.tex"), "w") as fh:
        fh.write(to_latex(df, caption, f"tab:{stem}"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.makedirs(args.out, exist_ok=True)

    chosen = select_runs(load_fold_results(args.runs))
    n = len(chosen)

    auroc = auroc_table(chosen)
    auroc_fmt = auroc.copy()
    auroc_fmt["AUROC"] = [fmt(m, s) for m, s in zip(auroc["AUROC"], auroc["SD"])]
    auroc_fmt = auroc_fmt.drop(columns=["SD"])
    write_table(auroc_fmt, args.out, "auroc",
                f"Per-finding test AUROC, mean $\\pm$ SD over {n} patient-level folds.")
    write_table(calibration_table(chosen), args.out, "calibration",
                "Expected calibration error before and after temperature scaling.")
    write_table(operating_point_table(chosen), args.out, "operating_points",
                "Operating points at per-finding thresholds.")

    macro = auroc[auroc["Finding"] == "Macro (13)"].iloc[0]
    comp = auroc[auroc["Finding"] == "CheXpert-5"].iloc[0]
    summary = {
        "folds": sorted(chosen),
        "runs": sorted({rec["run"] for rec in chosen.values()}),
        "macro_auroc": [macro["AUROC"], macro["SD"]],
        "competition_auroc": [comp["AUROC"], comp["SD"]],
        "pooled_macro_auroc": macro["Pooled AUROC"],
    }
    save_json(summary, os.path.join(args.out, "summary.json"))
    print(auroc_fmt.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nmacro AUROC {fmt(macro['AUROC'], macro['SD'])} | CheXpert-5 {fmt(comp['AUROC'], comp['SD'])}"
          f" | folds={n}")


if __name__ == "__main__":
    main()
