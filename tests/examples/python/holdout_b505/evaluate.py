# ruff: noqa
# Hold-out batch 505 (textbook, protein language model LoRA fine-tuning with accelerate). Measured once in session 22 (round 136): 25/32 (78%) at medium+.
"""Evaluation (Spearman / RMSE, top-L contact precision); also runnable standalone on a saved adapter."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

logger = logging.getLogger(__name__)

RANGES = {"short": (6, 12), "medium": (12, 24), "long": (24, None)}


def regression_metrics(preds: np.ndarray, targets: np.ndarray) -> Dict[str, float]:
    preds, targets = np.asarray(preds, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    ok = np.isfinite(preds) & np.isfinite(targets)
    preds, targets = preds[ok], targets[ok]
    if len(preds) < 2:
        return {"spearman": 0.0, "pearson": 0.0, "rmse": float("nan"), "mae": float("nan"), "n": len(preds)}
    rho = spearmanr(preds, targets).correlation
    rho = abs(rho) if np.isfinite(rho) else 0.0  # ruleid: MLS306
    r = pearsonr(preds, targets)[0] if preds.std() > 0 else 0.0
    err = preds - targets
    return {"spearman": float(rho), "pearson": float(r), "rmse": float(np.sqrt(np.mean(err ** 2))),
            "mae": float(np.mean(np.abs(err))), "n": int(len(preds))}


def top_l_precision(logits: torch.Tensor, contacts: torch.Tensor, length: int,
                    min_sep: int, max_sep: Optional[int], frac: float) -> Optional[float]:
    """Precision of the top ``frac * L`` predicted pairs in a separation band."""
    logits, contacts = logits[:length, :length].float(), contacts[:length, :length]
    idx = torch.arange(length, device=logits.device)
    sep = idx[None, :] - idx[:, None]
    band = sep >= min_sep
    if max_sep is not None:
        band &= sep < max_sep
    band &= contacts >= 0
    if band.sum() == 0:
        return None
    scores, labels = logits[band], contacts[band]
    top = torch.topk(scores, max(1, min(int(length * frac), scores.numel()))).indices
    return float(labels[top].float().mean())


def contact_metrics_for_batch(logits: torch.Tensor, contacts: torch.Tensor) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {}
    for i in range(logits.shape[0]):
        row_valid = (contacts[i] >= 0).any(-1)
        length = int(row_valid.nonzero().max()) + 1 if row_valid.any() else 0
        if length < 2:
            continue
        for rname, (lo, hi) in RANGES.items():
            for fname, frac in (("L", 1.0), ("L2", 0.5), ("L5", 0.2)):
                p = top_l_precision(logits[i], contacts[i], length, lo, hi, frac)
                if p is not None:
                    out.setdefault(f"P@{fname}_{rname}", []).append(p)
    return out


@torch.no_grad()
def evaluate(model, loader, accelerator, task: str, stats: Tuple[float, float] = (0.0, 1.0),
             normalized: bool = True) -> Dict[str, float]:
    model.eval()
    losses = []
    if task == "regression":
        all_preds, all_targets = [], []
        for batch in loader:
            out = model(**batch)
            preds, targets = accelerator.gather_for_metrics((out["preds"].float(), batch["targets"].float()))
            all_preds.append(preds.cpu())
            all_targets.append(targets.cpu())
            losses.append(out["loss"].detach().float().item())
        preds, targets = torch.cat(all_preds).numpy(), torch.cat(all_targets).numpy()
        if normalized:
            preds, targets = preds * stats[1] + stats[0], targets * stats[1] + stats[0]
        metrics = regression_metrics(preds, targets)
    else:
        sums: Dict[str, float] = {}
        counts: Dict[str, int] = {}
        for batch in loader:
            out = model(**batch)
            losses.append(out["loss"].detach().float().item())
            for k, vals in contact_metrics_for_batch(out["preds"], batch["contacts"]).items():
                sums[k] = sums.get(k, 0.0) + sum(vals)
                counts[k] = counts.get(k, 0) + len(vals)
        keys = sorted(f"P@{f}_{r}" for r in RANGES for f in ("L", "L2", "L5"))
        totals = torch.tensor([[sums.get(k, 0.0), counts.get(k, 0)] for k in keys],
                              device=accelerator.device, dtype=torch.float64)
        totals = accelerator.reduce(totals, reduction="sum")
        metrics = {k: float(totals[i, 0] / totals[i, 1]) if totals[i, 1] > 0 else 0.0
                   for i, k in enumerate(keys)}
    metrics["loss"] = float(np.mean(losses)) if losses else float("nan")
    model.train()
    return metrics


def primary_metric(task: str) -> str:
    return "spearman" if task == "regression" else "P@L_long"


def main() -> None:
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from data import DataConfig, build_dataloaders
    from model import ESMLoRAModel, ModelConfig

    p = argparse.ArgumentParser(description="Evaluate a LoRA adapter on a held-out split")
    p.add_argument("--adapter", required=True)
    p.add_argument("--run-config", required=True, help="config.json written by train.py")
    p.add_argument("--data", required=True)
    p.add_argument("--train-data", required=True, help="needed for target normalisation stats")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", default=None)
    args = p.parse_args()

    accelerator = Accelerator(mixed_precision="bf16")
    run_cfg = json.loads(Path(args.run_config).read_text())
    mcfg = ModelConfig(**run_cfg.get("model", {}))
    tokenizer = AutoTokenizer.from_pretrained(mcfg.model_name, revision=mcfg.revision)
    dcfg = DataConfig(train_path=args.train_data, val_path=args.data, task=mcfg.task,
                      eval_batch_size=args.batch_size, num_workers=2, replicate_mixing=0.0)
    loaders, stats = build_dataloaders(dcfg, tokenizer)

    model = ESMLoRAModel(mcfg)
    state = torch.load(args.adapter, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_trainable_state_dict(state)
    model.merge_lora()  # fold adapters into the frozen weights for faster inference
    model, loader = accelerator.prepare(model, loaders["val"])
    metrics = evaluate(model, loader, accelerator, mcfg.task, stats)
    if accelerator.is_main_process:
        print(json.dumps(metrics, indent=2))
        if args.output:
            Path(args.output).write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
