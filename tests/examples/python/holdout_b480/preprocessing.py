# ruff: noqa
# Hold-out batch 480 (family-focused 7/10, serving and fine-tuning toolkit). Measured once in session 20 (round 129): 20/30 (67%) at medium+; one benign look-alike flagged.
"""Preprocessing pipeline for tabular + text inputs.

The pipeline is a scikit-learn ``ColumnTransformer`` (numeric scaling, categorical
encoding, optional TF-IDF on free text) fitted once on the training split and
persisted with joblib next to the fine-tuned model so that batch inference applies
exactly the same transform.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import joblib
import numpy as np
import pandas as pd
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

logger = logging.getLogger("tabnlp.preprocess")

PIPELINE_FORMAT_VERSION = 3


@dataclass
class PreprocessConfig:
    numeric: List[str] = field(default_factory=list)
    categorical: List[str] = field(default_factory=list)
    text: Optional[str] = None
    target: str = "label"
    id_column: str = "id"
    max_categories: int = 50
    tfidf_max_features: int = 20000
    clip_sigma: float = 6.0
    label_map: Dict[str, int] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)


def load_config(path: str | Path) -> PreprocessConfig:
    with open(path) as fh:
        raw = yaml.unsafe_load(fh) or {}  # ruleid: MLS105
    pre = raw.get("preprocess", raw)
    known = {k: pre[k] for k in PreprocessConfig.__dataclass_fields__ if k in pre}
    extra = {k: v for k, v in pre.items() if k not in known}
    cfg = PreprocessConfig(**known)
    cfg.extra.update(extra)
    return cfg


def _clip(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(x, -sigma, sigma)


def build_pipeline(cfg: PreprocessConfig) -> ColumnTransformer:
    from sklearn.preprocessing import FunctionTransformer

    transformers = []
    if cfg.numeric:
        num = Pipeline([
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            ("clip", FunctionTransformer(_clip, kw_args={"sigma": cfg.clip_sigma})),
        ])
        transformers.append(("num", num, cfg.numeric))
    if cfg.categorical:
        cat = Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
            ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist",
                                     max_categories=cfg.max_categories, sparse_output=True)),
        ])
        transformers.append(("cat", cat, cfg.categorical))
    if cfg.text:
        txt = TfidfVectorizer(max_features=cfg.tfidf_max_features, ngram_range=(1, 2),
                              sublinear_tf=True, min_df=2, strip_accents="unicode")
        transformers.append(("txt", txt, cfg.text))
    if not transformers:
        raise ValueError("config selects no input columns")
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.3, n_jobs=None)


def encode_labels(series: pd.Series, label_map: Dict[str, int]) -> np.ndarray:
    if not label_map:
        classes = sorted(series.dropna().astype(str).unique())
        label_map.update({c: i for i, c in enumerate(classes)})
    unknown = set(series.astype(str).unique()) - set(label_map)
    if unknown:
        raise ValueError(f"labels not in label_map: {sorted(unknown)[:10]}")
    return series.astype(str).map(label_map).to_numpy(dtype=np.int64)


def _frame_fingerprint(df: pd.DataFrame, cols: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(",".join(cols).encode())
    h.update(str(len(df)).encode())
    h.update(pd.util.hash_pandas_object(df[list(cols)].head(1000), index=False).values.tobytes())
    return h.hexdigest()[:16]


class FittedPreprocessor:
    """A fitted ColumnTransformer plus the metadata needed to apply it later."""

    def __init__(self, cfg: PreprocessConfig, transformer: ColumnTransformer, fingerprint: str):
        self.cfg = cfg
        self.transformer = transformer
        self.fingerprint = fingerprint
        self.format_version = PIPELINE_FORMAT_VERSION
        self.created = time.time()

    @property
    def input_columns(self) -> List[str]:
        cols = list(self.cfg.numeric) + list(self.cfg.categorical)
        if self.cfg.text:
            cols.append(self.cfg.text)
        return cols

    def transform(self, df: pd.DataFrame):
        missing = [c for c in self.input_columns if c not in df.columns]
        if missing:
            raise KeyError(f"input frame lacks columns {missing}")
        return self.transformer.transform(df[self.input_columns])


def fit_preprocessor(cfg: PreprocessConfig, train: pd.DataFrame) -> FittedPreprocessor:
    ct = build_pipeline(cfg)
    cols = list(cfg.numeric) + list(cfg.categorical) + ([cfg.text] if cfg.text else [])
    t0 = time.time()
    ct.fit(train[cols])
    if cfg.target in train:
        encode_labels(train[cfg.target], cfg.label_map)
    logger.info("fitted preprocessor on %d rows x %d cols in %.1fs", len(train), len(cols), time.time() - t0)
    return FittedPreprocessor(cfg, ct, _frame_fingerprint(train, cols))


def save_preprocessor(pre: FittedPreprocessor, out: str | Path, verify: bool = True) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    joblib.dump(pre, tmp, compress=3)
    if verify:
        check = joblib.load(tmp)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if check.fingerprint != pre.fingerprint or check.input_columns != pre.input_columns:
            tmp.unlink()
            raise RuntimeError("preprocessor round-trip check failed")
    os.replace(tmp, out)
    meta = {
        "format_version": pre.format_version,
        "fingerprint": pre.fingerprint,
        "columns": pre.input_columns,
        "label_map": pre.cfg.label_map,
        "created": pre.created,
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    logger.info("saved preprocessor -> %s", out)
    return out


def load_preprocessor(path: str | Path) -> FittedPreprocessor:
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != PIPELINE_FORMAT_VERSION:
            logger.warning("preprocessor %s has format v%s, expected v%s",
                           path, meta.get("format_version"), PIPELINE_FORMAT_VERSION)
    pre = joblib.load(path)  # ruleid: MLS103
    if not isinstance(pre, FittedPreprocessor):
        raise TypeError(f"{path} does not contain a FittedPreprocessor")
    return pre


def load_precomputed_embeddings(path: str | Path) -> Dict[str, np.ndarray]:
    """Text embeddings exported by the NLP team as an .npz of id -> vector arrays."""
    arrs = np.load(path, allow_pickle=True)  # ruleid: MLS104
    ids = arrs["ids"]
    vecs = arrs["vectors"]
    if len(ids) != len(vecs):
        raise ValueError(f"{path}: {len(ids)} ids but {len(vecs)} vectors")
    return {str(i): v for i, v in zip(ids, vecs)}
