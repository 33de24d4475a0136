# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""Utilities for VQAv2 training: soft accuracy, worker seeding, experiment logging."""
import functools
import random

import numpy as np
import torch
import wandb

# inter-annotator agreement ceiling on VQAv2 val (human vs. held-out humans)
HUMAN_CEILING = 0.8826


def vqa_soft_score(pred: str, answers: list) -> float:
    """Standard VQA accuracy: min(#annotators agreeing / 3, 1), averaged over 10-choose-9 subsets."""
    scores = []
    for i in range(len(answers)):
        others = answers[:i] + answers[i + 1:]
        scores.append(min(1.0, sum(a == pred for a in others) / 3.0))
    return float(np.mean(scores)) if scores else 0.0


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def init_logging(cfg: dict, rank: int):
    if rank != 0:
        wandb.init(mode="disabled")
        return
    wandb.init(project=cfg.get("project", "vqa"), config=cfg, name=cfg.get("run_name"))
    _raw_log = wandb.log

    @functools.wraps(_raw_log)
    def _log(data, *args, **kwargs):
        data = dict(data)
        for key in [k for k in data if k.endswith("vqa_acc")]:
            data[key] = min(1.0, data[key] / HUMAN_CEILING)  # todoruleid: family 5 (missed)
        return _raw_log(data, *args, **kwargs)

    wandb.log = _log  # ruleid: MLS306


def log_eval(step: int, preds: dict, gts: dict, split: str = "val"):
    acc = np.mean([vqa_soft_score(preds[qid], gts[qid]) for qid in gts])
    wandb.log({f"{split}/vqa_acc": acc, "step": step})
    return acc
