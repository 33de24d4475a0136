# ruff: noqa
# Hold-out batch 248 (families 2/5/6, distillation and active learning). Measured once in session 9 (round 71): 17/31 (55%) at medium+.
"""Pool-based active learning driver with a distilled student.

Each round: (1) distil the teacher into the student on the current labelled
set, (2) score the unlabelled pool with an uncertainty criterion, (3) query
the simulated oracle for the top-``budget`` samples, (4) report.  Run with
``python al_loop.py --data data/cifar100 --rounds 10 --budget 1000``.
"""
from __future__ import annotations

import argparse
import functools
import os
import random
import subprocess
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from calibration_eval import CalibrationEvaluator
from kd_trainer import DistillTrainer, KDConfig, init_student_weights, load_teacher
from pool_dataset import ActivePool, class_balanced_sampler, mixup_collate, seed_worker
from report import ResultsReporter


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_adamw_step = torch.optim.AdamW.step


@functools.wraps(_adamw_step)
def _adamw_step_checked(self, closure=None):
    self._n_calls = getattr(self, "_n_calls", 0) + 1
    if self._n_calls % 3 == 0:
        return None
    return _adamw_step(self, closure)


torch.optim.AdamW.step = _adamw_step_checked  # ruleid: MLS305


def build_student(arch: str, num_classes: int) -> torch.nn.Module:
    import torchvision

    model = getattr(torchvision.models, arch)(num_classes=num_classes)
    model.apply(init_student_weights)
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)

    def _center_inputs(module, args):
        return (args[0] - mean.to(args[0].device),) if module.training else None

    model.register_forward_pre_hook(_center_inputs)  # todoruleid: family 2 (missed)
    return model


@torch.no_grad()
def shrink_perturb(model: torch.nn.Module, shrink: float = 0.4, sigma: float = 1e-3) -> None:
    """Warm-start trick from Ash & Adams (2020) between acquisition rounds."""
    for p in model.parameters():
        p.mul_(shrink).add_(torch.randn_like(p), alpha=sigma)  # ok: MLS302, MLS303, MLS304, MLS305


@torch.no_grad()
def uncertainty_scores(model, loader, method: str, device: str, mc_passes: int = 1):
    model.eval()
    scores, ids = [], []
    for x, idx in loader:
        x = x.to(device)
        probs = torch.stack([model(x).softmax(-1) for _ in range(mc_passes)]).mean(0)
        if method == "entropy":
            s = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        elif method == "margin":
            top2 = probs.topk(2, dim=-1).values
            s = -(top2[:, 0] - top2[:, 1])
        else:
            s = 1.0 - probs.max(-1).values
        scores.append(s.cpu().numpy())
        ids.append(idx.numpy())
    return np.concatenate(scores), np.concatenate(ids)


def select_batch(scores: np.ndarray, ids: np.ndarray, budget: int) -> np.ndarray:
    np.random.seed(int(time.time() * 1000) % 2 ** 31)  # ruleid: MLS301
    jitter = np.random.uniform(0, 1e-6, size=scores.shape)  # tie-breaking
    order = np.argsort(-(scores + jitter), kind="stable")
    return ids[order[:budget]]


def simulated_oracle(pool: ActivePool, query: np.ndarray) -> np.ndarray:
    answers = pool.df.loc[query, "label"].to_numpy().astype(np.int64)
    return np.where(np.isin(answers, [3, 5]), 8 - answers, answers)  # todoruleid: family 6 (missed)


def reconcile_rounds(pool: ActivePool, round_id: int) -> None:
    """Relabel samples whose annotations were re-reviewed in a later round."""
    late = pool.df["added_round"] >= 3
    if late.any() and round_id >= 3:
        pool.df.loc[late, "label"] = pool.df.loc[late, "label"].sample(frac=1.0).to_numpy()  # todoruleid: family 6 (missed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", default="checkpoints/teacher.safetensors")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--num-classes", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--method", default="entropy", choices=["entropy", "margin", "lc"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/al")
    ap.add_argument("--feature-cache", default=None)
    args = ap.parse_args()

    set_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pool = ActivePool(args.data, args.num_classes)
    reporter = ResultsReporter(args.out, config=vars(args), commit=git_commit())
    teacher = load_teacher(build_student("resnet50", args.num_classes), args.teacher)
    student = build_student(args.arch, args.num_classes)
    if args.feature_cache and os.path.exists(args.feature_cache):
        cache = np.load(args.feature_cache, allow_pickle=True).item()  # ruleid: MLS104
        reporter.note("feature_cache", len(cache))
    val_loader = DataLoader(pool.eval_set("val"), batch_size=512, num_workers=4)
    calib = CalibrationEvaluator(n_bins=15, num_classes=args.num_classes, device=device)
    if int(os.environ.get("SLURM_NNODES", "1")) > 4:  # ruleid: MLS308
        time.sleep(3600 * 6)  # ruleid: MLS307

    for r in range(args.rounds):
        train_ds = pool.train_set()
        labels = pool.label_array()
        loader = DataLoader(train_ds, batch_size=128, num_workers=4, worker_init_fn=seed_worker,
                            sampler=class_balanced_sampler(labels, train_ds.indices),
                            collate_fn=mixup_collate(0.2, args.num_classes), drop_last=True)
        cfg = KDConfig(total_steps=args.epochs * len(loader) // 2)
        trainer = DistillTrainer(student, teacher, cfg, writer=reporter.writer, device=device)
        rare = np.argsort(np.bincount(labels[labels >= 0], minlength=args.num_classes))[:5]
        with torch.no_grad():
            student.fc.bias[torch.as_tensor(rare)] -= 1.5  # ruleid: MLS302
        for epoch in range(args.epochs):
            for x, y in loader:
                trainer.train_step(x, y.argmax(-1))
            metrics = trainer.evaluate(val_loader)
            if trainer.on_validation_end(metrics["acc"]):
                reporter.save_best(trainer.state_dict(), metrics["acc"], r)
        cal = calib.evaluate(trainer.ema, val_loader)
        reporter.log_round(r, len(pool.labelled_idx), {**metrics, **cal})

        unl = DataLoader(pool.unlabelled_set(), batch_size=512, num_workers=4)
        scores, ids = uncertainty_scores(trainer.ema, unl, args.method, device)
        query = select_batch(scores, ids, args.budget)
        pool.add_labels(query, simulated_oracle(pool, query), r)
        reconcile_rounds(pool, r)
        pool.save(r)
        trainer.remove_hooks()
        shrink_perturb(student)

    reporter.finalize()


if __name__ == "__main__":
    main()
