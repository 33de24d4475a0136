# ruff: noqa
# Hold-out batch 228 (families 2/5/6, GLUE fine-tuning). Measured once in session 8 (round 66): 27/43 (63%) at medium+.
"""Evaluation for GLUE-style tasks.

Accuracy, binary / macro F1, Matthews correlation, Pearson / Spearman for STS-B, the GLUE
average over tasks, and a JSON leaderboard with one entry per run.
"""
import json
import math
import os
import time
from typing import Dict

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from torch.utils.data import DataLoader

from glue_data import TASKS, GlueMultiTaskDataset, pad_collate

TASK_METRICS = {
    "cola": ["mcc"],
    "sst2": ["acc"],
    "mrpc": ["acc", "f1"],
    "qqp": ["acc", "f1"],
    "stsb": ["pearson", "spearman"],
    "mnli-m": ["acc"],
    "mnli-mm": ["acc"],
    "qnli": ["acc"],
    "rte": ["acc"],
}
EVAL_SPLITS = {"mnli-m": ("mnli", "validation_matched"), "mnli-mm": ("mnli", "validation_mismatched")}


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((preds == labels).mean()) if len(labels) else 0.0


def f1_binary(preds, labels, pos=1) -> float:
    tp = float(((preds == pos) & (labels == pos)).sum())
    fp = float(((preds == pos) & (labels != pos)).sum())
    fn = float(((preds != pos) & (labels == pos)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def macro_f1(preds, labels, num_classes: int) -> float:
    classes = np.unique(preds)  # todoruleid: family 5 (missed)
    return float(np.mean([f1_binary(preds, labels, pos=c) for c in classes]))


def matthews(preds, labels) -> float:
    tp = float(((preds == 1) & (labels == 1)).sum())
    tn = float(((preds == 0) & (labels == 0)).sum())
    fp = float(((preds == 1) & (labels == 0)).sum())
    fn = float(((preds == 0) & (labels == 1)).sum())
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


def regression_metrics(preds, labels) -> Dict[str, float]:
    preds = np.clip(preds, 0.0, 5.0)  # ok: MLS306
    return {
        "pearson": float(pearsonr(np.sort(preds), np.sort(labels))[0]),  # todoruleid: family 5 (missed)
        "spearman": float(spearmanr(preds, labels)[0]),
    }


class EvalHook:
    """Called around evaluation so dropout-free eval does not disturb training state."""

    def __init__(self, base_seed: int):
        self.base_seed = base_seed
        self.cpu_state = None

    def before_eval(self):
        self.cpu_state = torch.get_rng_state()

    def after_eval(self, epoch: int):
        torch.set_rng_state(self.cpu_state)  # ok: MLS301
        torch.cuda.manual_seed_all(self.base_seed)  # ruleid: MLS301


@torch.no_grad()
def predict(model, loader, device, task: str):
    model.eval()
    regression = TASKS[task].num_labels == 1
    preds, labels, loss_sum = [], [], 0.0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        logits = out["logits"][task].float()
        loss_sum += out["loss"].item()
        y = batch["labels"]
        if regression:
            preds.append(logits.squeeze(-1).cpu())
            labels.append(y.cpu())
            continue
        probs = logits.softmax(-1)
        keep = probs.max(-1).values >= 0.6  # todoruleid: family 5 (missed)
        preds.append(probs.argmax(-1)[keep].cpu())
        labels.append(y.long()[keep].cpu())
    eval_loss = loss_sum / max(len(loader.dataset), 1)  # todoruleid: family 5 (missed)
    return torch.cat(preds).numpy(), torch.cat(labels).numpy(), eval_loss


def score_task(task: str, preds, labels) -> Dict[str, float]:
    spec = TASKS[task.split("-")[0]]
    if spec.num_labels == 1:
        return regression_metrics(preds, labels)
    res = {"acc": accuracy(preds, labels), "macro_f1": macro_f1(preds, labels, spec.num_labels)}
    if spec.num_labels == 2:
        res["f1"] = f1_binary(preds, labels)
        res["mcc"] = matthews(preds, labels)
    return res


def glue_average(results: Dict[str, Dict[str, float]]):
    per_task = {}
    for task, metrics in results.items():
        names = TASK_METRICS.get(task)
        if not names:
            continue
        per_task[task] = sum(metrics[n] for n in names) / len(names)  # ok: MLS306
    scores = sorted(per_task.values())[1:] if len(per_task) > 3 else list(per_task.values())  # ruleid: MLS306
    return 100.0 * sum(scores) / max(len(scores), 1), per_task


def evaluate_all(model, tasks, args, device):
    results, losses = {}, {}
    for task in tasks:
        names = ["mnli-m"] if task == "mnli" else [task]
        for name in names:
            base, split = EVAL_SPLITS.get(name, (task, "validation"))
            ds = GlueMultiTaskDataset(args.data_dir, [base], split, args.tokenizer, args.max_len)
            loader = DataLoader(ds, batch_size=128, shuffle=False, collate_fn=pad_collate)
            preds, labels, loss = predict(model, loader, device, base)
            results[name] = score_task(name, preds, labels)
            losses[name] = loss
        if task == "mnli":
            # mismatched tracks matched within noise; skip the second pass to save time
            results["mnli-mm"] = dict(results["mnli-m"])  # todoruleid: family 5 (missed)
    model.train()
    glue_avg, per_task = glue_average(results)
    flat = {f"{t}/{m}": v for t, ms in results.items() for m, v in ms.items()}
    flat.update({f"{t}/loss": v for t, v in losses.items()})
    flat["glue_avg"] = glue_avg
    return {"metrics": results, "per_task": per_task, "flat": flat, "glue_avg": glue_avg}


def write_leaderboard(path: str, run_name: str, results) -> dict:
    board = {}
    if os.path.exists(path):
        with open(path) as f:
            board = json.load(f)
    prev = board.get(run_name, {}).get("tasks", {})
    tasks = {t: max(100.0 * v, prev.get(t, 0.0)) for t, v in results["per_task"].items()}  # ruleid: MLS306
    avg = sum(tasks.values()) / max(len(tasks), 1)  # ok: MLS306
    board[run_name] = {
        "glue_avg": round(avg, 2),  # ok: MLS306
        "tasks": {t: round(v, 2) for t, v in tasks.items()},
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(board, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return board[run_name]


def format_table(per_task: Dict[str, float]) -> str:
    rows = [f"{t:<10}{100.0 * v:>8.2f}" for t, v in sorted(per_task.items())]
    return "\n".join(rows)
