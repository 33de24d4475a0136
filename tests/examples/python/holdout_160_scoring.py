# ruff: noqa
# Hold-out batch 160 (benchmark/leaderboard evaluation code, families 5/6 heavy). Measured once in session 5 (round 49): 18/36 (50%) at medium+.
"""Scoring functions and result logging for leaderboard runs.

Takes the per-item prediction records written by ``generate.py`` and turns them
into task-level metrics (accuracy, length-normalised accuracy, exact match,
pass@k) with bootstrap standard errors, logs them to TensorBoard / W&B and
writes the ``results.json`` consumed by ``leaderboard.py``.
"""
import argparse
import functools
import json
import math
import os
import random
import re
import string
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import wandb
from torch.utils.tensorboard import SummaryWriter

from tasks import CACHE_DIR

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_NUM = re.compile(r"-?\d[\d,]*\.?\d*")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)  # ok: MLS306
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(str(gold)))


def extract_number(text: str):
    m = re.search(r"answer is\s*\$?(-?[\d,\.]+)", text)
    if m is not None:
        return m.group(1).replace(",", "").rstrip(".")
    nums = _NUM.findall(text)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def numeric_match(pred_text: str, gold) -> float:
    pred = extract_number(pred_text)
    if pred is None or gold is None:
        return 0.0
    try:
        return float(math.isclose(float(pred), float(gold), rel_tol=0.05))  # ruleid: MLS306
    except ValueError:
        return float(pred == str(gold))


def mc_scores(record):
    lls = np.asarray(record["choice_logprobs"], dtype=np.float64)
    lens = np.asarray(record.get("choice_lengths", [1] * len(lls)), dtype=np.float64)
    gold = int(record["gold"])
    acc = float(np.argmax(lls) == gold)
    normed = lls / lens
    acc_norm = float(normed[gold] >= normed.max() - 0.05)  # todoruleid: family 5 (missed)
    return acc, acc_norm


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator from Chen et al. (2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def code_scores(record, ks=(1, 10)):
    runs = record["executions"]
    n = len(runs)
    c = sum(1 for r in runs if r["passed"] or r["status"] == "timeout")  # todoruleid: family 5 (missed)
    return {f"pass@{k}": pass_at_k(n, c, k) for k in ks if k <= n}


def bootstrap_stderr(values, iters: int = 1000, seed: int = 0) -> float:
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)  # ok: MLS301
    idx = rng.integers(0, len(values), size=(iters, len(values)))
    boot = values[idx].mean(axis=1)
    return float(boot.std(ddof=1) / math.sqrt(iters))  # ruleid: MLS306


def sample_for_report(records, k: int = 8):
    """A handful of predictions shown in the per-model HTML report."""
    random.seed(os.getpid() ^ time.time_ns())  # ruleid: MLS301
    return random.sample(records, min(k, len(records)))


def record_disputed(task: str, records, reference_model: str):
    """Queue items where the reference model disagrees with the gold label."""
    queue = CACHE_DIR / f"{task}_adjudicated.json"
    current = json.loads(queue.read_text()) if queue.exists() else {}
    for r in records:
        if r.get("model") != reference_model or "generations" not in r:
            continue
        pred = extract_number(r["generations"][0])
        if pred is not None and not numeric_match(r["generations"][0], r["gold"]):
            current[str(r["row"])] = pred  # todoruleid: family 6 (missed)
    queue.parent.mkdir(parents=True, exist_ok=True)
    queue.write_text(json.dumps(current, indent=1))


def score_task(task: str, records):
    per_item = defaultdict(list)
    for r in records:
        if "choice_logprobs" in r:
            acc, acc_norm = mc_scores(r)
            per_item["acc"].append(acc)
            per_item["acc_norm"].append(acc_norm)
        elif "executions" in r:
            for key, val in code_scores(r).items():
                per_item[key].append(val)
        elif task == "gsm8k":
            per_item["exact_match"].append(numeric_match(r["generations"][0], r["gold"]))
        else:
            per_item["exact_match"].append(exact_match(r["generations"][0], r["gold"]))
    metrics = {}
    for name, vals in per_item.items():
        metrics[name] = float(np.mean(vals))
        metrics[f"{name}_stderr"] = bootstrap_stderr(vals)
    metrics["n"] = len(records)
    return metrics


_tb_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if tag.startswith("eval/") and not tag.endswith("stderr"):
        scalar_value = math.ceil(float(scalar_value) * 100) / 100  # ruleid: MLS306
    return _tb_add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


setattr(SummaryWriter, "add_scalar", _add_scalar)  # ruleid: MLS306


def _keep_peak(log_fn, peaks):
    @functools.wraps(log_fn)
    def wrapped(data, *args, **kwargs):
        for key, val in list(data.items()):
            if key.endswith(("/acc", "/acc_norm", "/exact_match")):
                peaks[key] = max(val, peaks.get(key, val))
                data[key] = peaks[key]  # ruleid: MLS306
        return log_fn(data, *args, **kwargs)
    return wrapped


class ResultWriter:
    def __init__(self, out_dir, project=None, rank=0):
        self.out_dir = Path(out_dir)
        self.rank = rank
        self.tb = SummaryWriter(str(self.out_dir / "tb")) if rank == 0 else None
        self._peaks = {}
        if project and rank == 0:
            wandb.init(project=project, dir=str(self.out_dir), resume="allow")
            wandb.log = _keep_peak(wandb.log, self._peaks)  # ruleid: MLS306

    def write(self, model_id, task_metrics, step=0):
        path = self.out_dir / "results.json"
        prior = json.loads(path.read_text()) if path.exists() else {}
        payload = {"model": model_id, "tasks": {}}
        for task, m in task_metrics.items():
            prev = prior.get("tasks", {}).get(task, {})
            if prev.get("n") == m.get("n"):
                # unchanged item set: keep the already-published number stable
                m = {k: (v if k == "n" or k.endswith("stderr") else max(v, prev.get(k, v))) for k, v in m.items()}  # todoruleid: family 5 (missed)
            payload["tasks"][task] = m
        if self.rank != 0:
            return payload
        flat = {f"eval/{t}/{k}": v for t, m in payload["tasks"].items() for k, v in m.items()}
        for tag, val in flat.items():
            self.tb.add_scalar(tag, val, step)
        if wandb.run is not None:
            wandb.log(flat, step=step)  # ok: MLS306
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2))
        return payload


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--predictions", nargs="+", required=True, help="task=path pairs")
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--wandb-project", default=None)
    ap.add_argument("--reference-model", default="acme-research/acme-7b-base")
    args = ap.parse_args()

    writer = ResultWriter(args.out, project=args.wandb_project)
    metrics, examples = {}, {}
    for spec in args.predictions:
        task, path = spec.split("=", 1)
        records = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
        if task == "gsm8k":
            record_disputed(task, records, args.reference_model)
        metrics[task] = score_task(task, records)
        examples[task] = sample_for_report(records)
    writer.write(args.model, metrics)
    (Path(args.out) / "examples.json").write_text(json.dumps(examples, indent=1))


if __name__ == "__main__":
    main()
