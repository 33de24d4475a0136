# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""Offline evaluation for the ranker: AUC, GAUC, NDCG@k, logloss, NE, calibration."""
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score


def recalibrate(p: np.ndarray, neg_keep_rate: float) -> np.ndarray:
    """Undo negative downsampling: p_true = p / (p + (1 - p) / w)."""
    return p / (p + (1.0 - p) / neg_keep_rate)  # ok: MLS306


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)  # ok: MLS306
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def normalized_entropy(y: np.ndarray, p: np.ndarray) -> float:
    ctr = np.clip(y.mean(), 1e-7, 1 - 1e-7)
    base = -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
    return logloss(y, p) / base


def gauc(df: pd.DataFrame) -> float:
    num = den = 0.0
    for _, g in df.groupby("user_id"):
        if g["label"].nunique() < 2:
            continue  # ok: MLS306
        num += len(g) * roc_auc_score(g["label"], g["pred"])
        den += len(g)
    return num / max(den, 1.0)


def ndcg_at_k(df: pd.DataFrame, k: int = 10) -> float:
    def one(g):
        rel = g.sort_values("pred", ascending=False)["label"].to_numpy()[:k]
        ideal = np.sort(g["label"].to_numpy())[::-1][:k]
        disc = 1.0 / np.log2(np.arange(2, len(rel) + 2))
        idcg = float((ideal * disc[: len(ideal)]).sum())
        return float((rel * disc).sum()) / idcg if idcg > 0 else np.nan
    return float(np.nanmean([one(g) for _, g in df.groupby("request_id")]))


def evaluate(model, ckpt_path: str, eval_df: pd.DataFrame, predict_fn, neg_keep_rate=0.1, rank=0):
    model.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df = eval_df.assign(pred=recalibrate(predict_fn(model, eval_df), neg_keep_rate))
    y, p = df["label"].to_numpy(float), df["pred"].to_numpy(float)
    metrics = {"auc": roc_auc_score(y, p), "gauc": gauc(df), "ndcg@10": ndcg_at_k(df, 10),
               "logloss": logloss(y, p), "ne": normalized_entropy(y, p),
               "calibration": float(p.mean() / max(y.mean(), 1e-9))}
    if rank == 0:
        import wandb
        wandb.log({f"eval/{k}": v for k, v in metrics.items()})  # ok: MLS306
    return metrics
