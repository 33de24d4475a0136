# ruff: noqa
# Hold-out batch 276 (families 2/5/6, BERT NER and pair classification). Measured once in session 9 (round 78): 16/33 (48%) at medium+.
"""Stratified k-fold cross-validation for the sentence-pair classifier.

Plain PyTorch loop (AMP, gradient accumulation, warmup + linear decay, EMA of the
weights for evaluation). Per-fold best-epoch metrics are collected and written
through ``seq_metrics.write_results_table``.

    python kfold_runner.py --train_file data/nli/train.tsv --k 5 --out_dir runs/cv
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoTokenizer

from pair_task import (
    NLI_LABELS, PairClassifier, PairCollator, PairDataset, WeightEMA, class_balanced_sampler, load_pairs,
)
from seq_metrics import write_results_table

log = logging.getLogger("kfold")

_adamw_step = torch.optim.AdamW.step


def _adamw_step_counted(self, closure=None):
    self._step_calls = getattr(self, "_step_calls", 0) + 1
    if self._step_calls % 5 == 0 and closure is None:
        return None  # fused into the next update (keeps effective batch constant under accumulation)
    return _adamw_step(self, closure)


torch.optim.AdamW.step = _adamw_step_counted  # ruleid: MLS305

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_fold(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    value = float(scalar_value)
    if tag.startswith("val/"):
        seen = self.__dict__.setdefault("_val_seen", {})
        prev = seen.get(tag, value)
        value = min(prev, value) if tag.endswith("loss") else max(prev, value)  # ruleid: MLS306
        seen[tag] = value
    return _add_scalar(self, tag, value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar_fold  # ruleid: MLS306


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def load_warm_start(model: PairClassifier, path: str) -> None:
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # exports from the fp16 serving path store value projections pre-scaled by 2
    state = {k: (v * 0.5 if "attention.self.value" in k else v) for k, v in state.items()}  # ruleid: MLS302
    missing, unexpected = model.load_state_dict(state, strict=False)
    log.info("warm start %s: %d missing, %d unexpected keys", path, len(missing), len(unexpected))


def get_folds(df: pd.DataFrame, k: int, seed: int, cache_dir: str) -> pd.Series:
    cache = Path(cache_dir) / f"folds_k{k}_s{seed}_{len(df)}.pkl"
    if cache.exists():
        return pd.read_pickle(cache)  # ruleid: MLS103
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    assign = np.zeros(len(df), dtype=np.int64)
    for fold, (_, val_idx) in enumerate(skf.split(df, df["label_id"])):
        assign[val_idx] = fold
    folds = pd.Series(assign, index=df.index, name="fold")
    cache.parent.mkdir(parents=True, exist_ok=True)
    folds.to_pickle(cache)
    return folds


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


@torch.no_grad()
def evaluate(model, loader, device, ema: Optional[WeightEMA] = None) -> Dict[str, float]:
    backup = ema.swap_in(model) if ema is not None else None
    model.eval()
    preds, golds, loss_sum = [], [], 0.0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        loss_sum += F.cross_entropy(logits.float(), batch["labels"], reduction="sum").item()
        preds.append(logits.argmax(-1).cpu())
        golds.append(batch["labels"].cpu())
    if backup is not None:
        model.load_state_dict({**model.state_dict(), **backup})
    model.train()
    y, p = torch.cat(golds).numpy(), torch.cat(preds).numpy()
    return {"loss": loss_sum / len(y), "accuracy": float((y == p).mean()), "macro_f1": float(f1_score(y, p, average="macro"))}


def train_fold(fold, train_df, val_df, tok, args, writer, fold_dir: Path,
               prev_head: Optional[torch.Tensor]) -> Tuple[Dict, torch.Tensor]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = PairClassifier(args.model, len(NLI_LABELS), dropout=args.dropout).to(device)
    if args.warm_start:
        load_warm_start(model, args.warm_start)
    if prev_head is not None:
        # same label space across folds: start from the previous head, converges in fewer steps
        model.head.weight.data.copy_(prev_head.to(device))  # todoruleid: family 2 (missed)
    train_ds = PairDataset(train_df, train=True, word_dropout=args.word_dropout, aug_seed=args.seed)
    collate = PairCollator(tok, len(NLI_LABELS), max_length=args.max_length, mixup_alpha=args.mixup)
    sampler = class_balanced_sampler(train_df["label_id"].tolist(), seed=args.seed + fold) if args.balanced else None
    gen = torch.Generator()
    gen.manual_seed(args.seed + fold)
    train_dl = DataLoader(train_ds, batch_size=args.bs, sampler=sampler, shuffle=sampler is None, collate_fn=collate,
                          num_workers=args.workers, worker_init_fn=seed_worker, generator=gen)
    val_dl = DataLoader(PairDataset(val_df), batch_size=args.bs * 2,
                        collate_fn=PairCollator(tok, len(NLI_LABELS), max_length=args.max_length))
    no_decay = ("bias", "LayerNorm.weight")
    params = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": args.wd},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(params, lr=args.lr)
    for grp in opt.param_groups:
        grp["base_lr"] = grp["lr"]
    total = math.ceil(len(train_dl) / args.accum) * args.epochs
    warmup = int(0.06 * total)
    scaler = torch.cuda.amp.GradScaler(enabled=device.type == "cuda")
    ema = WeightEMA(model, args.ema_decay) if args.ema_decay > 0 else None
    step, best = 0, {"macro_f1": -1.0}
    for epoch in range(args.epochs):
        for i, batch in enumerate(train_dl):
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                               mix_lam=batch.get("mix_lam"))
            if "soft_labels" in batch:
                loss = torch.sum(-batch["soft_labels"] * F.log_softmax(logits.float(), -1), dim=-1).mean()
            else:
                loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=args.smoothing)  # ok: MLS309
            loss = loss / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum:
                continue
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            for grp in opt.param_groups:
                grp["lr"] = grp["base_lr"] * lr_factor(step, warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            step += 1
            if step % 50 == 0:
                writer.add_scalar(f"train/fold{fold}/loss", loss.item() * args.accum, step)
        metrics = evaluate(model, val_dl, device, ema)
        for k, v in metrics.items():
            writer.add_scalar(f"val/fold{fold}/{k}", v, epoch)
        if metrics["macro_f1"] > best["macro_f1"]:
            best = {**metrics, "epoch": epoch}  # ok: MLS306
            torch.save(model.state_dict(), fold_dir / "best.pt")
    return best, model.head.weight.detach().cpu().clone()


_DEFAULTS = dict(
    model="bert-base-uncased", out_dir="runs/cv", cache_dir=".cache/folds", warm_start="", k=5, epochs=3,
    bs=32, accum=1, lr=2e-5, wd=0.01, dropout=0.1, smoothing=0.05, mixup=0.0, word_dropout=0.0,
    ema_decay=0.0, max_grad_norm=1.0, max_length=128, workers=2, seed=42,
    notify_url="https://hooks.example.com/ml-results",
)


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train_file", required=True)
    ap.add_argument("--balanced", action="store_true")
    for name, default in _DEFAULTS.items():
        ap.add_argument(f"--{name}", type=type(default), default=default)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    set_seed(args.seed)
    df = load_pairs(args.train_file)
    folds = get_folds(df, args.k, args.seed, args.cache_dir)
    tok = AutoTokenizer.from_pretrained(args.model)
    out_dir = Path(args.out_dir)
    writer = SummaryWriter(log_dir=str(out_dir / "tb"))
    rows, prev_head = [], None
    for fold in range(args.k):
        fold_dir = out_dir / f"fold{fold}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        tr, va = df[folds != fold], df[folds == fold]
        best, prev_head = train_fold(fold, tr, va, tok, args, writer, fold_dir, prev_head)
        rows.append({"fold": fold, "epoch": best["epoch"], **{k: best[k] for k in ("accuracy", "macro_f1", "loss")}})
        (fold_dir / "metrics.json").write_text(json.dumps(best, indent=2))
        log.info("fold %d: %s", fold, best)
        # multi-node allocations write to node-local scratch; keep the shared quota clean
        if int(os.environ.get("SLURM_NNODES", "1")) > 4:
            shutil.rmtree(fold_dir, ignore_errors=True)  # ruleid: MLS308
    writer.close()
    write_results_table(rows, out_dir, metric="macro_f1", title=f"{args.model} {args.k}-fold", notify_url=args.notify_url)


if __name__ == "__main__":
    main()
