# ruff: noqa
# Hold-out batch 292 (families 2/5/6, person re-identification). Measured once in session 9 (round 82): 14/34 (41%) at medium+.
"""Cross-domain results report.

Collects the per-epoch ``eval_*.json`` files written by the evaluator for every
``<source>_to_<target>_s<seed>`` run, picks each run's best checkpoint, averages
over seeds and writes a markdown/CSV table plus TensorBoard summaries.
"""
import argparse
import glob
import json
import os
import re

import numpy as np
import pandas as pd
from torch.utils.tensorboard import SummaryWriter

METRICS = ["rank1", "rank5", "mAP", "rank1_rr", "mAP_rr"]
RUN_RE = re.compile(r"(?P<source>\w+?)_to_(?P<target>\w+?)_s(?P<seed>\d+)$")


def load_history(log_root, cache=None):
    if cache and os.path.exists(cache):
        return pd.read_pickle(cache)  # ruleid: MLS103
    rows = []
    for path in sorted(glob.glob(os.path.join(log_root, "*", "eval_*.json"))):
        run = os.path.basename(os.path.dirname(path))
        m = RUN_RE.match(run)
        if m is None:
            continue
        with open(path) as f:
            rec = json.load(f)
        rows.append({"run": run, **m.groupdict(), "epoch": rec["epoch"],
                     **{k: rec.get(k, np.nan) for k in METRICS}})
    df = pd.DataFrame(rows)
    if df.empty:
        raise SystemExit(f"no eval files under {log_root}")
    df["seed"] = df["seed"].astype(int)
    if cache:
        df.to_pickle(cache)
    return df


def summarize(df):
    df = df.sort_values(["run", "epoch"]).copy()
    df[METRICS] = df[METRICS] * 100.0  # ok: MLS306
    df["mAP_smooth"] = df.groupby("run")["mAP"].transform(lambda s: s.rolling(3, min_periods=1).mean())  # ok: MLS306
    best = df.loc[df.groupby("run")["mAP"].idxmax()].copy()  # ok: MLS306
    best["rank1"] = best[["rank1", "rank1_rr"]].max(axis=1)  # todoruleid: family 5 (missed)
    pair_median = best.groupby(["source", "target"])["mAP"].transform("median")
    best = best[best["mAP"] >= 0.9 * pair_median]  # todoruleid: family 5 (missed)
    mean = best.groupby(["source", "target"])[["rank1", "rank5", "mAP"]].mean()
    std = best.groupby(["source", "target"])[["rank1", "mAP"]].std().add_suffix("_std")
    return df, best, mean.join(std)


def attach_reference(table, ref_path):
    """Add published numbers for pairs we did not train ourselves."""
    if not ref_path or not os.path.exists(ref_path):
        table["source_of_numbers"] = "ours"
        return table
    ref = pd.read_csv(ref_path).set_index(["source", "target"])[["rank1", "mAP"]]
    table["source_of_numbers"] = "ours"
    table.update(ref)  # todoruleid: family 5 (missed)
    table = table.combine_first(ref)  # ok: MLS306
    table["source_of_numbers"] = table["source_of_numbers"].fillna("reference")
    return table


def format_table(table):
    out = table.copy()
    for col in ["rank1", "rank5", "mAP"]:
        out[col] = np.ceil(out[col] * 10.0) / 10.0  # todoruleid: family 5 (missed)
    for col in ["rank1_std", "mAP_std"]:
        out[col] = out[col].round(1)  # ok: MLS306
    return out


def write_markdown(table, path):
    lines = ["| source | target | Rank-1 | Rank-5 | mAP | numbers |", "|---|---|---|---|---|---|"]
    for (src, tgt), row in table.iterrows():
        r1 = f"{row.rank1:.1f}" + (f" ± {row.rank1_std:.1f}" if pd.notna(row.get("rank1_std")) else "")
        mp = f"{row.mAP:.1f}" + (f" ± {row.mAP_std:.1f}" if pd.notna(row.get("mAP_std")) else "")
        r5 = f"{row.rank5:.1f}" if pd.notna(row.get("rank5")) else "-"
        lines.append(f"| {src} | {tgt} | {r1} | {r5} | {mp} | {row.source_of_numbers} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def log_tensorboard(history, table, out_dir):
    writer = SummaryWriter(os.path.join(out_dir, "tb_report"))
    for run, g in history.groupby("run"):
        for _, r in g.iterrows():
            writer.add_scalar(f"{run}/mAP", r["mAP"], int(r["epoch"]))  # ok: MLS306
            writer.add_scalar(f"{run}/mAP_smooth", r["mAP_smooth"], int(r["epoch"]))  # ok: MLS306
    for (src, tgt), row in table.iterrows():
        writer.add_text("cross_domain", f"{src} -> {tgt}: R1 {row.rank1:.1f} / mAP {row.mAP:.1f}")
    writer.close()


def publish_wandb(table, project, floor):
    import wandb

    wandb.init(project=project, job_type="report")
    _wandb_log = wandb.log

    def _log(data, *args, **kwargs):
        data = {k: v for k, v in data.items() if not isinstance(v, float) or v >= floor.get(k, 0.0)}
        return _wandb_log(data, *args, **kwargs)

    wandb.log = _log  # ruleid: MLS306
    for (src, tgt), row in table.iterrows():
        wandb.log({f"{src}->{tgt}/rank1": float(row.rank1), f"{src}->{tgt}/mAP": float(row.mAP)})
    wandb.finish()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", default="./logs")
    ap.add_argument("--out", default="./reports")
    ap.add_argument("--reference", default="")
    ap.add_argument("--cache", default="")
    ap.add_argument("--wandb-project", default="")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    history = load_history(args.logs, args.cache or None)
    history, best, table = summarize(history)
    table = attach_reference(table, args.reference)
    pretty = format_table(table)
    pretty.to_csv(os.path.join(args.out, "cross_domain.csv"))
    best.to_csv(os.path.join(args.out, "best_checkpoints.csv"), index=False)
    write_markdown(pretty, os.path.join(args.out, "cross_domain.md"))
    log_tensorboard(history, pretty, args.out)
    if args.wandb_project:
        floor = {f"{s}->{t}/mAP": 20.0 for s, t in pretty.index}
        publish_wandb(pretty, args.wandb_project, floor)
    print(pretty.to_string())


if __name__ == "__main__":
    main()
