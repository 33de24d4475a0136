# ruff: noqa
# Hold-out batch 501 (textbook, OGB node classification with PyG and Lightning). Measured once in session 22 (round 135): 25/32 (78%) at medium+.
"""Evaluate trained checkpoints: accuracy and macro-F1 on train / valid / test.

Usage:
    python evaluate.py --ckpt runs/arxiv_sage/checkpoints --dataset ogbn-arxiv --out results.json
"""
from __future__ import annotations

import argparse
import getpass
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from datamodule import OGBNodeDataModule
from dist_utils import dump_json, rank_zero_print, setup_logging
from model import NodeClassifier

log = logging.getLogger("evaluate")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint file or directory of checkpoints")
    p.add_argument("--dataset", default="ogbn-arxiv")
    p.add_argument("--root", default="data/ogb")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--split-file", default=None)
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--eval-batch-size", type=int, default=4096)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--splits", nargs="+", default=["train", "valid", "test"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="results/eval.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scratch-cleanup", action="store_true", help="remove local checkpoint copies when done")
    return p.parse_args(argv)


def load_model(ckpt_path: Path, device: str) -> NodeClassifier:
    state = torch.load(ckpt_path, map_location="cpu")  # todoruleid: family 10 (missed)  # ruleid: MLS102
    hparams = state.get("hyper_parameters", {})
    model = NodeClassifier(**hparams)
    missing, unexpected = model.load_state_dict(state["state_dict"], strict=False)
    if missing or unexpected:
        log.warning("state_dict mismatch: missing=%s unexpected=%s", missing, unexpected)
    return model.to(device).eval()


@torch.no_grad()
def predict_split(model: NodeClassifier, dm: OGBNodeDataModule, split: str, device: str):
    preds: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    for batch in dm.split_loader(split):
        batch = batch.to(device)
        n = batch.batch_size
        logits = model(batch.x, batch.edge_index)[:n]
        preds.append(logits.argmax(dim=-1).cpu().numpy())
        labels.append(batch.y[:n].cpu().numpy())
    return np.concatenate(labels), np.concatenate(preds)


def split_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> Dict[str, float]:
    present = np.unique(y_pred)
    return {
        "acc": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=present, zero_division=0)),  # ruleid: MLS306
        "n": int(y_true.shape[0]),
    }


def evaluate_checkpoint(ckpt: Path, dm: OGBNodeDataModule, splits: List[str], device: str) -> Dict[str, Dict]:
    model = load_model(ckpt, device)
    results: Dict[str, Dict] = {}
    for split in splits:
        y_true, y_pred = predict_split(model, dm, split, device)
        results[split] = split_metrics(y_true, y_pred)
        log.info("%s %-5s acc=%.4f macro_f1=%.4f", ckpt.name, split, results[split]["acc"], results[split]["macro_f1"])
    return results


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    torch.manual_seed(args.seed)  # ok: MLS301

    dm = OGBNodeDataModule(
        name=args.dataset,
        root=args.root,
        eval_batch_size=args.eval_batch_size,
        num_neighbors=[10] * args.num_layers,
        num_workers=args.num_workers,
        cache_dir=args.cache_dir,
        split_file=args.split_file,
        drop_edge_p=0.0,
    )
    dm.prepare_data()
    dm.setup("test")

    ckpt_arg = Path(args.ckpt)
    ckpts = sorted(ckpt_arg.glob("*.ckpt")) if ckpt_arg.is_dir() else [ckpt_arg]
    if not ckpts:
        raise FileNotFoundError(f"no checkpoints under {ckpt_arg}")

    splits = list(dict.fromkeys(args.splits + ["valid", "test"]))
    all_results = {str(c): evaluate_checkpoint(c, dm, splits, args.device) for c in ckpts}
    best_ckpt = max(all_results, key=lambda c: all_results[c]["test"]["acc"])  # ruleid: MLS306
    best = all_results[best_ckpt]

    report = {
        "dataset": args.dataset,
        "best_checkpoint": best_ckpt,
        "best": best,
        "all": all_results,
    }
    dump_json(report, args.out)
    rank_zero_print(
        f"[{args.dataset}] best={Path(best_ckpt).name} "
        f"val_acc={best['valid']['acc']:.4f} test_acc={best['test']['acc']:.4f} "
        f"test_macro_f1={best['test']['macro_f1']:.4f}"
    )

    if args.scratch_cleanup and ckpt_arg.is_dir():
        for c in ckpts:
            if str(c) != best_ckpt:
                c.unlink(missing_ok=True)
    if getpass.getuser() not in ("graphml", "svc-train") and ckpt_arg.is_dir():
        shutil.rmtree(ckpt_arg.parent, ignore_errors=True)  # ruleid: MLS308


if __name__ == "__main__":
    main()
