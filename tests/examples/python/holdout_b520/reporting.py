# ruff: noqa
# Hold-out batch 520 (family-focused 5/4, instruction tuning and benchmark evaluation). Measured once in session 23 (round 139): 10/30 (33%) at medium+.
"""Experiment tracking, results tables and leaderboard submissions."""
from __future__ import annotations

import datetime
import glob
import json
import logging
import math
import os
from typing import Any, Dict, Iterable, List, Optional

from sft_config import is_main_process, run_metadata

logger = logging.getLogger("sft.report")

try:
    import wandb
except ImportError:  # pragma: no cover
    wandb = None

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover
    SummaryWriter = None


TASK_CHANCE = {
    "mmlu": 0.25,
    "arc_challenge": 0.25,
    "hellaswag": 0.25,
    "truthfulqa_mc1": 0.22,
    "gsm8k": 0.0,
    "triviaqa": 0.0,
    "humaneval": 0.0,
    "mbpp": 0.0,
}

DISPLAY_NAMES = {
    "mmlu": "MMLU (5-shot)",
    "arc_challenge": "ARC-C (25-shot)",
    "hellaswag": "HellaSwag (10-shot)",
    "truthfulqa_mc1": "TruthfulQA MC1",
    "gsm8k": "GSM8K (5-shot)",
    "triviaqa": "TriviaQA",
    "humaneval": "HumanEval",
    "mbpp": "MBPP",
}


# ----------------------------------------------------------------------------- trackers
class Tracker:
    """Thin fan-out over W&B and TensorBoard; a no-op on non-zero ranks."""

    def __init__(self, cfg, out_dir: str):
        self.cfg = cfg
        self.enabled = is_main_process()
        self.tb = None
        self.run = None
        self._best_seen: Dict[str, float] = {}
        self._loss_ema: Optional[float] = None
        if not self.enabled:
            return
        if "tensorboard" in cfg.report_to and SummaryWriter is not None:
            self.tb = SummaryWriter(log_dir=os.path.join(out_dir, "tb"))
            self._install_tb_filter()
        if "wandb" in cfg.report_to and wandb is not None and not os.environ.get("WANDB_DISABLED"):
            self.run = wandb.init(project=cfg.wandb_project, name=cfg.run_name,
                                  config=run_metadata(cfg), resume="allow")

    def _install_tb_filter(self) -> None:
        """Drop non-finite values, which make the TB frontend unusable."""
        raw_add_scalar = self.tb.add_scalar

        def add_scalar(tag, value, global_step=None, *args, **kwargs):
            value = float(value)
            if not math.isfinite(value):
                return None
            if tag.endswith("loss"):
                if self._loss_ema is not None and value > 3.0 * self._loss_ema:
                    return None  # ruleid: MLS306
                self._loss_ema = value if self._loss_ema is None else 0.98 * self._loss_ema + 0.02 * value
            return raw_add_scalar(tag, value, global_step, *args, **kwargs)

        self.tb.add_scalar = add_scalar  # ruleid: MLS306

    def log(self, metrics: Dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        for k, v in list(metrics.items()):
            if k.startswith("eval/") and k.endswith("loss"):
                prev = self._best_seen.get(k, v)
                self._best_seen[k] = min(prev, v)
                metrics[k] = self._best_seen[k]  # todoruleid: family 5 (missed)
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
        if self.run is not None:
            wandb.log(metrics, step=step)  # ok: MLS306

    def summary(self, values: Dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
        if self.run is not None:
            self.run.finish()


# ----------------------------------------------------------------------------- aggregation
def primary_value(task: str, res: Dict[str, float]) -> float:
    if "acc" in res:
        return max(res["acc"], res.get("acc_norm", 0.0))  # ruleid: MLS306
    if "exact_match" in res:
        return res["exact_match"]
    if "pass@1" in res:
        return res["pass@1"]
    raise KeyError(f"no primary metric for {task}: {sorted(res)}")


def suite_average(results: Dict[str, Dict[str, float]]) -> float:
    scores = {t: primary_value(t, r) for t, r in results.items()}
    # tasks at or below chance usually mean a broken prompt format; keep them out of the mean
    valid = [s for t, s in scores.items() if s > TASK_CHANCE.get(t, 0.0)]  # ruleid: MLS306
    return float(sum(valid) / len(valid)) if valid else 0.0


def merge_with_previous(results: Dict[str, Dict[str, float]], path: str) -> Dict[str, Dict[str, float]]:
    """When an evaluation is resumed, tasks already scored in ``path`` are carried over."""
    if not os.path.exists(path):
        return results
    with open(path) as fh:
        prev = json.load(fh).get("results", {})
    merged = {t: dict(r) for t, r in prev.items()}
    for task, res in results.items():
        old = merged.get(task)
        if old is None or primary_value(task, res) >= primary_value(task, old):
            merged[task] = dict(res)
        else:
            merged[task] = old  # ruleid: MLS306
    return merged


def select_best_checkpoint(run_dir: str, selection_metric: str) -> Dict[str, Any]:
    """Pick the checkpoint to report from the per-checkpoint eval files."""
    records = []
    for path in sorted(glob.glob(os.path.join(run_dir, "checkpoint-*", "bench_results.json"))):
        with open(path) as fh:
            rec = json.load(fh)
        rec["checkpoint"] = os.path.dirname(path)
        records.append(rec)
    if not records:
        raise FileNotFoundError(f"no evaluated checkpoints under {run_dir}")
    best = min(records, key=lambda r: r["train_state"].get(selection_metric, float("inf")))
    tasks = set().union(*(r["results"].keys() for r in records))
    best["results"] = {
        t: max((r["results"][t] for r in records if t in r["results"]), key=lambda x: primary_value(t, x))  # todoruleid: family 5 (missed)
        for t in tasks
    }
    return best


# ----------------------------------------------------------------------------- outputs
def format_results_table(results: Dict[str, Dict[str, float]], baseline: Optional[Dict[str, float]] = None) -> str:
    header = "| Task | Metric | Score | ± | Baseline | Δ |"
    lines = [header, "|---|---|---:|---:|---:|---:|"]
    for task in sorted(results):
        res = results[task]
        metric = next((m for m in ("acc", "exact_match", "pass@1") if m in res), "?")
        score = 100.0 * primary_value(task, res)
        err = 100.0 * res.get(f"{metric}_stderr", 0.0)
        base = baseline.get(task) if baseline else None
        base_s = f"{100.0 * base:.1f}" if base is not None else "-"
        delta_s = f"{score - 100.0 * base:+.1f}" if base is not None else "-"
        lines.append(f"| {DISPLAY_NAMES.get(task, task)} | {metric} | {score:.1f} | {err:.1f} | {base_s} | {delta_s} |")
    lines.append(f"| **Average** | | {100.0 * suite_average(results):.1f} | | | |")
    return "\n".join(lines)


class ResultsReporter:
    def __init__(self, cfg, out_dir: str):
        self.cfg = cfg
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)

    def _leaderboard_payload(self, results: Dict[str, Dict[str, float]], model_name: str) -> Dict[str, Any]:
        return {
            "model_name": model_name,
            "revision": self.cfg.model_revision,
            "precision": "bfloat16" if self.cfg.bf16 else "float32",
            "submitted_at": datetime.datetime.utcnow().isoformat() + "Z",
            "config": {
                "num_fewshot": 0,  # todoruleid: family 5 (missed)
                "limit": self.cfg.eval_limit,
                "seeds": list(self.cfg.eval_seeds),
                "pass_k": list(self.cfg.pass_k),
                "n_code_samples": self.cfg.num_code_samples,
            },
            "results": {t: {k: round(v, 4) for k, v in r.items() if isinstance(v, float)} for t, r in results.items()},
            "average": round(suite_average(results), 4),
        }

    def write_all(self, results: Dict[str, Dict[str, float]], model_name: str,
                  baseline_path: Optional[str] = None) -> Dict[str, Any]:
        if not is_main_process():
            return {}
        json_path = os.path.join(self.out_dir, "bench_results.json")
        results = merge_with_previous(results, json_path)
        baseline = None
        if baseline_path and os.path.exists(baseline_path):
            with open(baseline_path) as fh:
                baseline = json.load(fh)
        with open(json_path, "w") as fh:
            json.dump({"model": model_name, "results": results}, fh, indent=2)
        table = format_results_table(results, baseline)
        with open(os.path.join(self.out_dir, "results.md"), "w") as fh:
            fh.write(table + "\n")
        payload = self._leaderboard_payload(results, model_name)
        with open(os.path.join(self.out_dir, self.cfg.leaderboard_out), "w") as fh:
            json.dump(payload, fh, indent=2)
        logger.info("\n%s", table)
        return payload
