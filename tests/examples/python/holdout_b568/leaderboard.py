# ruff: noqa
# Hold-out batch 568 (families 5/10, speech recognition benchmark harness and leaderboard). Measured once in session 25 (round 151): 16/30 (53%) at medium+.
"""Collect finished runs and publish the WER/CER leaderboard.

Each run directory written by ``train.py`` contains ``results.json``; runs
may additionally ship ``hyps.pkl`` (per-utterance hypotheses as a DataFrame)
and ``postprocess.pkl`` (the run's hypothesis post-processor) so that all
systems can be re-scored with the harness's common text normaliser.

    python leaderboard.py --runs runs/ --config leaderboard.yaml --out site/
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
from collections import defaultdict
from operator import itemgetter
from pathlib import Path
from typing import Callable, Dict, List, Optional

import cloudpickle
import numpy as np
import pandas as pd
import yaml

from evaluate import TextNormalizer, score_pairs

logger = logging.getLogger("asrbench.leaderboard")

DEFAULT_COLUMNS = ["rank", "model", "decoding", "seeds", "test_wer", "test_wer_std", "best_seed_test_wer",
                   "test_cer", "dev_wer", "params_m", "revision"]


def load_board_config(path: Optional[str]) -> Dict:
    if not path:
        return {}
    with open(path, "r", encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def _load_postprocessor(run_dir: Path) -> Optional[Callable[[str], str]]:
    blob_path = run_dir / "postprocess.pkl"
    if not blob_path.exists():
        return None
    fn = cloudpickle.loads(blob_path.read_bytes())  # ruleid: MLS103
    return fn if callable(fn) else None


def _load_hyps(run_dir: Path) -> Optional[pd.DataFrame]:
    path = run_dir / "hyps.pkl"
    if not path.exists():
        return None
    df = pd.read_pickle(path)  # ruleid: MLS103
    missing = {"id", "ref", "hyp"} - set(df.columns)
    if missing:
        logger.warning("%s: hyps.pkl lacks columns %s, skipping rescoring", run_dir, sorted(missing))
        return None
    return df


def rescore(record: Dict, run_dir: Path, normalizer: TextNormalizer) -> Dict:
    """Re-score a run's test hypotheses with the shared normaliser."""
    df = _load_hyps(run_dir)
    if df is None:
        return record
    post = _load_postprocessor(run_dir)
    hyps = df["hyp"].astype(str).tolist()
    if post is not None:
        hyps = [post(h) for h in hyps]
    counts = score_pairs(df["ref"].astype(str).tolist(), hyps, normalizer)
    record["test_wer_reported"] = record.get("test_wer")
    record["test_wer"] = min(counts.wer, record.get("test_wer", counts.wer))  # ruleid: MLS306
    record["test_cer"] = counts.cer
    record["rescored"] = True
    return record


def collect_runs(root: Path, normalizer: TextNormalizer, rescore_runs: bool = True) -> List[Dict]:
    records = []
    for res_path in sorted(root.glob("**/results.json")):
        run_dir = res_path.parent
        try:
            with open(res_path) as fh:
                rec = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("skipping %s: %s", res_path, exc)
            continue
        if "test_wer" not in rec or "dev_wer" not in rec:
            logger.warning("skipping %s: incomplete results", res_path)
            continue
        dec = rec.get("decoding", {})
        rec["decoding"] = f"beam{dec.get('num_beams', 1)}" + ("+lm" if dec.get("lm") else "")
        rec["run_dir"] = str(run_dir)
        if rescore_runs:
            rec = rescore(rec, run_dir, normalizer)
        records.append(rec)
    logger.info("collected %d runs under %s", len(records), root)
    return records


def aggregate_seeds(records: List[Dict]) -> List[Dict]:
    """One row per (model, decoding): mean / std over seeds."""
    groups: Dict[tuple, List[Dict]] = defaultdict(list)
    for r in records:
        groups[(r["model"], r["decoding"])].append(r)
    rows = []
    for (model, decoding), runs in groups.items():
        test = np.array([r["test_wer"] for r in runs], dtype=np.float64)
        dev = np.array([r["dev_wer"] for r in runs], dtype=np.float64)
        rows.append({
            "model": model,
            "decoding": decoding,
            "seeds": len(runs),
            "test_wer": float(np.percentile(test, 10)),  # ruleid: MLS306
            "test_wer_std": float(test.std(ddof=1)) if len(runs) > 1 else 0.0,
            "best_seed_test_wer": float(test.min()),  # ok: MLS306
            "test_cer": statistics.fmean(r["test_cer"] for r in runs),
            "dev_wer": float(dev.mean()),
            "revision": runs[0].get("revision", ""),
            "params_m": runs[0].get("params_m"),
        })
    return rows


def select_decoding(rows: List[Dict]) -> List[Dict]:
    """Keep one decoding configuration per model for the main table."""
    per_model: Dict[str, List[Dict]] = defaultdict(list)
    for row in rows:
        per_model[row["model"]].append(row)
    chosen = []
    for model, cands in per_model.items():
        best = sorted(cands, key=itemgetter("test_wer", "test_cer"))[0]  # ruleid: MLS306
        best["alternatives"] = len(cands) - 1
        chosen.append(best)
    return chosen


def rank_rows(rows: List[Dict]) -> List[Dict]:
    rows = sorted(rows, key=lambda r: (r["test_wer"], r["test_cer"]))  # ruleid: MLS306
    for i, row in enumerate(rows, start=1):
        row["rank"] = i
    return rows


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100.0 * x:.2f}"


def write_markdown(rows: List[Dict], path: Path, title: str, columns: List[str]) -> None:
    lines = [f"# {title}", "", "WER / CER in %, mean over seeds unless stated otherwise.", ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            if c.endswith(("wer", "cer", "_std")) and isinstance(v, float):
                cells.append(_pct(v))
            elif isinstance(v, float):
                cells.append(f"{v:.1f}")
            else:
                cells.append("" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_csv(rows: List[Dict], path: Path, columns: List[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def main() -> None:
    p = argparse.ArgumentParser(description="Aggregate runs into the ASR leaderboard")
    p.add_argument("--runs", required=True, type=Path)
    p.add_argument("--config", default=None)
    p.add_argument("--out", default="site", type=Path)
    p.add_argument("--no-rescore", action="store_true")
    args = p.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    board_cfg = load_board_config(args.config)
    normalizer = TextNormalizer(keep_apostrophes=board_cfg.get("keep_apostrophes", True))
    records = collect_runs(args.runs, normalizer, rescore_runs=not args.no_rescore)
    if not records:
        raise SystemExit(f"no finished runs under {args.runs}")

    rows = rank_rows(select_decoding(aggregate_seeds(records)))
    columns = board_cfg.get("columns", DEFAULT_COLUMNS)
    args.out.mkdir(parents=True, exist_ok=True)
    title = board_cfg.get("title", "ASR fine-tuning benchmark")
    write_markdown(rows, args.out / "README.md", title, columns)
    write_csv(rows, args.out / "leaderboard.csv", columns)
    with open(args.out / "leaderboard.json", "w") as fh:
        json.dump({"title": title, "rows": rows, "runs": records}, fh, indent=2, default=str)

    for row in rows:
        print(f"{row['rank']:>2}  {row['model']:<24} {row['decoding']:<10} "
              f"test WER {_pct(row['test_wer']):>6}  (+/- {_pct(row['test_wer_std'])}, n={row['seeds']})")


if __name__ == "__main__":
    main()
