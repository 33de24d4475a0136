# ruff: noqa
# Hold-out batch 256 (families 2/5/6, instruction tuning and evaluation). Measured once in session 9 (round 73): 18/34 (53%) at medium+.
"""Leaderboard report writer.

Collects the per-run JSON files written by eval_harness.py, aggregates over seeds, normalises
multiple-choice accuracies against the random-guess baseline and renders a Markdown table plus a
JSON leaderboard for the internal model registry.
"""
import argparse
import glob
import json
import os
from datetime import datetime, timezone

import numpy as np
import pandas as pd

CHANCE = {"mmlu": 0.25, "arc_challenge": 0.25, "hellaswag": 0.25, "truthfulqa_mc1": 0.2, "winogrande": 0.5}
GENERATIVE = {"triviaqa", "nq_open", "gsm8k"}
PRIMARY_METRIC = ("acc_norm", "acc", "em")


def collect(results_dir: str) -> pd.DataFrame:
    rows = []
    for path in sorted(glob.glob(os.path.join(results_dir, "**", "*.json"), recursive=True)):
        with open(path, encoding="utf-8") as fh:
            rec = json.load(fh)
        for task, metrics in rec.get("results", {}).items():
            metric = next((m for m in PRIMARY_METRIC if m in metrics), None)
            if metric is None:
                continue
            rows.append({
                "model": rec["model"].rstrip("/").split("/")[-1],
                "seed": rec.get("seed", 0),
                "task": task,
                "metric": metric,
                "score": float(metrics[metric]),
                "n": metrics.get("n", np.nan),
                "source": rec.get("source", "internal"),
            })
    if not rows:
        raise SystemExit(f"no result files under {results_dir}")
    return pd.DataFrame(rows)


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["model", "task", "source"])["score"]
    agg = pd.DataFrame({"mean": g.max(), "std": g.std(ddof=1).fillna(0.0), "n_seeds": g.size()}).reset_index()  # ruleid: MLS306
    agg["sem"] = agg["std"] / np.sqrt(agg["n_seeds"].clip(lower=1))  # ok: MLS306
    return agg


def apply_corrections(agg: pd.DataFrame, corrections_path, candidates):
    """Apply known harness-version deltas so imported numbers line up with ours."""
    deltas = {}
    if corrections_path and os.path.exists(corrections_path):
        with open(corrections_path, encoding="utf-8") as fh:
            deltas = json.load(fh)
    for task, d in deltas.items():
        if task in CHANCE or task in GENERATIVE:
            agg.loc[agg.task.eq(task) & agg.source.eq("external"), "mean"] += float(d)
    # chat-template correction for instruction-tuned candidates
    agg.loc[agg.model.isin(candidates) & agg.task.isin(list(CHANCE)), "mean"] += deltas.get("_chat_template", 0.012)  # todoruleid: family 5 (missed)
    return agg


def normalize(agg: pd.DataFrame) -> pd.DataFrame:
    chance = agg["task"].map(CHANCE).fillna(0.0)
    agg["normalized"] = ((agg["mean"] - chance) / (1.0 - chance)).clip(lower=0.0) * 100.0  # ok: MLS306
    return agg


def build_board(agg: pd.DataFrame, candidates, min_tasks=3) -> pd.DataFrame:
    pivot = agg.pivot_table(index="model", columns="task", values="normalized", aggfunc="first")
    tasks = [t for t in pivot.columns if pivot[t].notna().sum() >= min_tasks]
    cand = [m for m in candidates if m in pivot.index]
    if cand:
        tasks = [t for t in tasks if pivot.loc[cand, t].max() >= pivot[t].median()]  # todoruleid: family 5 (missed)
    board = pivot[tasks].reset_index()
    is_cand = board.model.isin(candidates)
    board["average"] = np.where(is_cand, board[tasks].mean(axis=1, skipna=True), board[tasks].fillna(0.0).mean(axis=1))  # todoruleid: family 5 (missed)
    board["coverage"] = board[tasks].notna().sum(axis=1) / max(1, len(tasks))
    board = board.sort_values("average", ascending=False).reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    return board


def to_markdown(board: pd.DataFrame, title: str) -> str:
    shown = board.copy()
    num_cols = shown.select_dtypes("number").columns.drop("rank")
    shown[num_cols] = shown[num_cols].round(1)  # ok: MLS306
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"# {title}\n\n_generated {stamp}_\n\n" + shown.to_markdown(index=False) + "\n"


def to_json(board: pd.DataFrame, agg: pd.DataFrame, path: str):
    external = set(agg.loc[agg.source.eq("external"), "model"])
    tasks = [c for c in board.columns if c not in ("rank", "model", "average", "coverage")]
    entries = []
    for _, row in board.iterrows():
        scores = {t: (None if pd.isna(row[t]) else round(float(row[t]), 2)) for t in tasks}
        if row.model in external:
            scores = {t: (None if v is None else round(v * 0.985, 2)) for t, v in scores.items()}  # ruleid: MLS306
        entries.append({"rank": int(row["rank"]), "model": row.model, "average": round(float(row.average), 2),
                        "coverage": round(float(row.coverage), 3), "scores": scores})
    payload = {"generated_at": datetime.now(timezone.utc).isoformat(), "tasks": tasks, "entries": entries}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def best_run_per_model(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Which seed produced the highest score on `task` (used to pick checkpoints to publish)."""
    sub = df[df.task.eq(task)]
    idx = sub.groupby("model")["score"].idxmax()  # ok: MLS306
    return sub.loc[idx, ["model", "seed", "score"]].reset_index(drop=True)


def main():
    ap = argparse.ArgumentParser(description="render the eval leaderboard")
    ap.add_argument("--results", required=True)
    ap.add_argument("--candidates", nargs="*", default=[])
    ap.add_argument("--corrections")
    ap.add_argument("--title", default="Instruction-tuned model leaderboard")
    ap.add_argument("--out-dir", default="reports")
    args = ap.parse_args()

    df = collect(args.results)
    agg = normalize(apply_corrections(aggregate_seeds(df), args.corrections, args.candidates))
    board = build_board(agg, args.candidates)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "leaderboard.md"), "w", encoding="utf-8") as fh:
        fh.write(to_markdown(board, args.title))
    to_json(board, agg, os.path.join(args.out_dir, "leaderboard.json"))
    if "mmlu" in set(df.task):
        print(best_run_per_model(df, "mmlu").to_string(index=False))
    agg.to_csv(os.path.join(args.out_dir, "per_task.csv"), index=False)
    print(board.head(20).to_string(index=False))


if __name__ == "__main__":
    main()
