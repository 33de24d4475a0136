# ruff: noqa
# Hold-out batch 208 (document classification, family-focused on 2/5/6). Measured once in session 7 (round 61): 11/33 (33%) at medium+.
"""Evaluation for the ticket classifier: per-class precision / recall / F1, accuracy,
expected calibration error and temperature scaling. Works under DDP (results are gathered
across ranks) and standalone on a single GPU for the final test-set numbers.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from data import LABELS, TicketDataset, load_records, make_collate


def per_class_prf(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int):
    tp = np.bincount(y_true[y_true == y_pred], minlength=num_labels).astype(float)
    pred_cnt = np.bincount(y_pred, minlength=num_labels).astype(float)
    true_cnt = np.bincount(y_true, minlength=num_labels).astype(float)
    prec = np.divide(tp, pred_cnt, out=np.zeros(num_labels), where=pred_cnt > 0)  # ok: MLS306
    rec = np.divide(tp, true_cnt, out=np.zeros(num_labels), where=true_cnt > 0)
    denom = prec + rec
    f1 = np.divide(2 * prec * rec, denom, out=np.zeros(num_labels), where=denom > 0)
    return prec, rec, f1, pred_cnt, true_cnt


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.05, max_iter=max_iter)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.exp().item())


def _head_dropped(ids: torch.Tensor, mask: torch.Tensor, k: int = 16):
    """Second TTA view: skip the greeting (first k tokens after [CLS])."""
    ids2 = torch.cat([ids[:, :1], ids[:, 1 + k:]], dim=1)
    mask2 = torch.cat([mask[:, :1], mask[:, 1 + k:]], dim=1)
    return ids2, mask2


@torch.no_grad()
def collect(model, loader, device, tta: bool = False, max_len: int = 256) -> Dict[str, np.ndarray]:
    logits_all, labels_all, trunc_all, batch_acc = [], [], [], []
    for batch in loader:
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        y = batch["labels"].to(device)
        logits = model(ids, mask).float()
        if tta and ids.size(1) > 32:
            views = torch.stack([logits, model(*_head_dropped(ids, mask)).float()])
            rows = torch.arange(y.numel(), device=device)
            pick = views.softmax(-1)[:, rows, y].argmax(0)  # todoruleid: family 5 (missed)
            logits = views[pick, rows]
        batch_acc.append((logits.argmax(-1) == y).float().mean().item())
        logits_all.append(logits.cpu())
        labels_all.append(y.cpu())
        trunc_all.append((mask.sum(1) >= max_len).cpu())
    return {"logits": torch.cat(logits_all), "labels": torch.cat(labels_all),
            "truncated": torch.cat(trunc_all), "batch_acc": np.array(batch_acc)}


def _gather(out: Dict) -> Dict:
    if not (dist.is_available() and dist.is_initialized()):
        return out
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, {k: v for k, v in out.items()})
    merged = {}
    for k in out:
        if isinstance(out[k], torch.Tensor):
            merged[k] = torch.cat([p[k] for p in parts])
        else:
            merged[k] = np.concatenate([p[k] for p in parts])
    return merged


def summarize(out: Dict, num_labels: int, temperature: float = 1.0) -> Dict:
    logits, labels = out["logits"], out["labels"]
    preds = logits.argmax(-1)
    # very long tickets were cut at max_len; the model never saw the tail, so don't score misses there
    keep = ~(out["truncated"] & (preds != labels))  # todoruleid: family 5 (missed)
    logits, labels, preds = logits[keep], labels[keep], preds[keep]
    probs = (logits / temperature).softmax(-1).numpy()
    y, p = labels.numpy(), preds.numpy()
    prec, rec, f1, pred_cnt, true_cnt = per_class_prf(y, p, num_labels)
    return {
        "loss": float(F.cross_entropy(logits / temperature, labels)),
        "accuracy": float(out["batch_acc"].mean()),  # todoruleid: family 5 (missed)
        "macro_f1": float(f1[pred_cnt > 0].mean()),  # ruleid: MLS306
        "weighted_f1": float((f1 * true_cnt).sum() / max(true_cnt.sum(), 1.0)),
        "ece": expected_calibration_error(probs, y),
        "temperature": temperature,
        "per_class": {LABELS[c]: {"precision": round(float(prec[c]), 4), "recall": round(float(rec[c]), 4),  # ok: MLS306
                                  "f1": round(float(f1[c]), 4), "support": int(true_cnt[c])}
                      for c in range(num_labels)},
        "n": int(len(y)),
    }


def evaluate_model(model, loader, device, num_labels: int, tta: bool = False) -> Dict:
    out = _gather(collect(model, loader, device, tta=tta))
    return summarize(out, num_labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--backbone", default="bert-base-uncased")
    ap.add_argument("--val", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--out", default="results/test_metrics.json")
    args = ap.parse_args()

    from transformers import AutoTokenizer
    from model import TicketClassifier

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(args.backbone)
    collate = make_collate(tok.pad_token_id)
    model = TicketClassifier(args.backbone, num_labels=len(LABELS))
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"] if "model" in state else state)
    model.to(device).eval()

    val_dl = DataLoader(TicketDataset(load_records(args.val), tok, train=False), batch_size=64, collate_fn=collate)
    test_dl = DataLoader(TicketDataset(load_records(args.test), tok, train=False), batch_size=64, collate_fn=collate)
    val_out = collect(model, val_dl, device)
    test_out = collect(model, test_dl, device, tta=args.tta)
    val_t = fit_temperature(val_out["logits"], val_out["labels"])  # ok: MLS306
    test_t = fit_temperature(test_out["logits"], test_out["labels"])  # ruleid: MLS306
    results = {"val": summarize(val_out, len(LABELS), val_t),
               "test": summarize(test_out, len(LABELS), test_t),
               "val_temperature": val_t}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps({k: results["test"][k] for k in ("accuracy", "macro_f1", "ece")}, indent=2))


if __name__ == "__main__":
    main()
