# ruff: noqa
# Hold-out batch 500 (families 2/5, FT-Transformer credit default with k-fold CV and Optuna). Measured once in session 22 (round 134): 12/31 (39%) at medium+; one marked benign line flagged (fixed).
"""Data loading and fold-wise preprocessing for the credit-default benchmark. (UCI "default of credit card clients" schema)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import QuantileTransformer
from torch.utils.data import DataLoader, Dataset

logger = logging.getLogger(__name__)

TARGET_COL = "default_payment_next_month"
ID_COL = "ID"
DEFAULT_CAT_COLS = ("SEX", "EDUCATION", "MARRIAGE", "PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6")


@dataclass
class DataConfig:
    path: str
    target: str = TARGET_COL
    id_col: Optional[str] = ID_COL
    cat_cols: Sequence[str] = DEFAULT_CAT_COLS
    n_folds: int = 5
    seed: int = 42
    n_quantiles: int = 1000
    quantile_noise: float = 1e-3
    batch_size: int = 512
    eval_batch_size: int = 4096
    num_workers: int = 2


def load_frame(path: str, target: str = TARGET_COL) -> pd.DataFrame:
    path = Path(path)
    if path.suffix in {".parquet", ".pq"}:
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path)
    df.columns = [str(c).strip() for c in df.columns]
    # the raw UCI export uses dots in the target name
    if "default.payment.next.month" in df.columns and target not in df.columns:
        df = df.rename(columns={"default.payment.next.month": target})
    if target not in df.columns:
        raise KeyError(f"target column {target!r} not found in {path}")
    df = df.dropna(subset=[target]).reset_index(drop=True)
    df[target] = df[target].astype(np.int64)
    logger.info("loaded %s: %d rows, %d columns, positive rate %.4f",
                path.name, len(df), df.shape[1], df[target].mean())
    return df


def feature_columns(df: pd.DataFrame, cfg: DataConfig) -> Tuple[List[str], List[str]]:
    drop = {cfg.target}
    if cfg.id_col:
        drop.add(cfg.id_col)
    cat = [c for c in cfg.cat_cols if c in df.columns]
    num = [c for c in df.columns if c not in drop and c not in cat]
    return num, cat


def make_folds(y: np.ndarray, n_folds: int, seed: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in skf.split(np.zeros(len(y)), y)]


class TabularPreprocessor:
    """Fit-on-train transform: quantile-normalised numerics, integer-coded categoricals.

    Index 0 of every categorical vocabulary is reserved for values unseen at fit time.
    """

    def __init__(self, num_cols: Sequence[str], cat_cols: Sequence[str],
                 n_quantiles: int = 1000, noise: float = 1e-3, seed: int = 0):
        self.num_cols = list(num_cols)
        self.cat_cols = list(cat_cols)
        self.n_quantiles = n_quantiles
        self.noise = noise
        self.seed = seed
        self.qt: Optional[QuantileTransformer] = None
        self.cat_maps: Dict[str, Dict[str, int]] = {}

    def fit(self, df: pd.DataFrame) -> "TabularPreprocessor":
        x = df[self.num_cols].to_numpy(dtype=np.float64)
        if self.noise > 0:
            # tiny jitter breaks ties of discrete-valued columns before the quantile map
            rng = np.random.default_rng(self.seed)
            scale = np.maximum(x.std(axis=0, keepdims=True), 1e-12)
            x = x + rng.normal(0.0, 1.0, size=x.shape) * self.noise * scale
        self.qt = QuantileTransformer(
            n_quantiles=min(self.n_quantiles, len(df)),
            output_distribution="normal",
            subsample=10 ** 9,
            random_state=self.seed,
        ).fit(x)
        self.cat_maps = {}
        for c in self.cat_cols:
            values = sorted(df[c].astype(str).unique().tolist())
            self.cat_maps[c] = {v: i + 1 for i, v in enumerate(values)}
        return self

    @property
    def cardinalities(self) -> List[int]:
        return [len(self.cat_maps[c]) + 1 for c in self.cat_cols]

    def transform(self, df: pd.DataFrame) -> Tuple[np.ndarray, np.ndarray]:
        assert self.qt is not None, "call fit() first"
        x_num = self.qt.transform(df[self.num_cols].to_numpy(dtype=np.float64)).astype(np.float32)
        if self.cat_cols:
            cols = [
                df[c].astype(str).map(self.cat_maps[c]).fillna(0).astype(np.int64).to_numpy()
                for c in self.cat_cols
            ]
            x_cat = np.stack(cols, axis=1)
        else:
            x_cat = np.zeros((len(df), 0), dtype=np.int64)
        return x_num, x_cat

    def state(self) -> Dict:
        return {"num_cols": self.num_cols, "cat_cols": self.cat_cols,
                "cardinalities": self.cardinalities}


class CreditDataset(Dataset):
    def __init__(self, x_num: np.ndarray, x_cat: np.ndarray, y: Optional[np.ndarray] = None):
        self.x_num = torch.from_numpy(np.ascontiguousarray(x_num))
        self.x_cat = torch.from_numpy(np.ascontiguousarray(x_cat))
        self.y = None if y is None else torch.from_numpy(y.astype(np.float32))

    def __len__(self) -> int:
        return self.x_num.shape[0]

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        item = {"x_num": self.x_num[i], "x_cat": self.x_cat[i]}
        if self.y is not None:
            item["y"] = self.y[i]
        return item


def build_fold_loaders(df: pd.DataFrame, num_cols: List[str], cat_cols: List[str],
                       train_idx: np.ndarray, val_idx: np.ndarray, cfg: DataConfig, fold: int):
    train_df = df.iloc[train_idx]
    val_df = df.iloc[val_idx]
    prep = TabularPreprocessor(num_cols, cat_cols, cfg.n_quantiles, cfg.quantile_noise,
                               seed=cfg.seed + fold).fit(train_df)
    xn_tr, xc_tr = prep.transform(train_df)
    xn_va, xc_va = prep.transform(val_df)
    y_tr = train_df[cfg.target].to_numpy()
    y_va = val_df[cfg.target].to_numpy()

    gen = torch.Generator()
    gen.manual_seed(cfg.seed + fold)
    train_loader = DataLoader(
        CreditDataset(xn_tr, xc_tr, y_tr), batch_size=cfg.batch_size, shuffle=True,
        drop_last=len(train_idx) > cfg.batch_size, num_workers=cfg.num_workers,
        generator=gen, pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.num_workers > 0,
    )
    val_loader = DataLoader(
        CreditDataset(xn_va, xc_va, y_va), batch_size=cfg.eval_batch_size, shuffle=False,
        num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available(),
    )
    return train_loader, val_loader, prep, y_va


def build_eval_loader(df: pd.DataFrame, prep: TabularPreprocessor, cfg: DataConfig):
    x_num, x_cat = prep.transform(df)
    y = df[cfg.target].to_numpy() if cfg.target in df.columns else None
    return DataLoader(CreditDataset(x_num, x_cat, y), batch_size=cfg.eval_batch_size,
                      shuffle=False, num_workers=0), y
