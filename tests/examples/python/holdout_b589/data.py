# ruff: noqa
# Hold-out batch 589 (textbook, ESM-2 variant-effect fine-tuning with the HF Trainer). Measured once in session 27 (round 157): 20/31 (65%) at medium+.
"""Variant tables, protein-level splits and the masking data collator.

Input tables follow the ProteinGym / MaveDB convention: one row per variant with
``protein_id``, the wild-type ``sequence``, a ``mutant`` string such as ``A23V:G45D``
(1-based positions), a continuous DMS ``score`` and, optionally, a binary ``label``
(1 = damaging / pathogenic, 0 = benign, missing = unlabelled).
"""
from __future__ import annotations

import logging
import os
import pickle
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from huggingface_hub import hf_hub_download
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("protein_id", "sequence", "mutant", "score")
REFERENCE_SPLIT_REVISION = "8c2f4e1b9a7d03c5e6f1a2b4d9e0c7f3a1b5d2e8"


# --------------------------------------------------------------------------- #
# Parsing and preprocessing
# --------------------------------------------------------------------------- #
def parse_mutant(mutant: str) -> List[Tuple[str, int, str]]:
    """``'A23V:G45D'`` -> ``[('A', 22, 'V'), ('G', 44, 'D')]`` (0-based positions)."""
    mutations = []
    for token in str(mutant).split(":"):
        token = token.strip()
        if not token or token.upper() in ("WT", "_WT", "SYNONYMOUS"):
            continue
        wt, pos, mt = token[0], int(token[1:-1]) - 1, token[-1]
        mutations.append((wt, pos, mt))
    return mutations


def apply_mutations(sequence: str, mutations: Sequence[Tuple[str, int, str]]) -> str:
    residues = list(sequence)
    for wt, pos, mt in mutations:
        if pos >= len(residues) or residues[pos] != wt:
            found = residues[pos] if pos < len(residues) else "<end>"
            raise ValueError(f"wild-type mismatch at {pos + 1}: expected {wt}, found {found}")
        residues[pos] = mt
    return "".join(residues)


def load_variant_table(path: str, min_variants_per_protein: int = 20) -> pd.DataFrame:
    if path.endswith(".parquet"):
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, sep="\t" if path.endswith((".tsv", ".tsv.gz")) else ",")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} is missing required columns: {missing}")

    df = df.dropna(subset=["score", "sequence", "mutant"]).copy()
    df["mutations"] = df["mutant"].map(parse_mutant)
    df["num_mutations"] = df["mutations"].map(len)
    df = df[df["num_mutations"] > 0]
    if "label" not in df.columns:
        df["label"] = -1
    df["label"] = df["label"].fillna(-1).astype(int)

    counts = df.groupby("protein_id")["mutant"].transform("size")
    df = df[counts >= min_variants_per_protein].reset_index(drop=True)
    logger.info("Loaded %d variants over %d proteins", len(df), df["protein_id"].nunique())
    return df


def filter_variants(df: pd.DataFrame, max_mutations: Optional[int] = None) -> pd.DataFrame:
    if max_mutations is not None:
        df = df[df["num_mutations"] <= max_mutations]
    # Clinical labels are curated for single substitutions; higher-order entries come
    # from automated propagation and are noisy.
    df = df[~((df["label"] == 1) & (df["num_mutations"] > 1))]  # ruleid: MLS309
    return df.reset_index(drop=True)


def normalize_scores(df: pd.DataFrame, method: str = "rank") -> pd.DataFrame:
    """Put DMS scores from different assays on a comparable scale (``target`` column)."""
    df = df.copy()
    if method == "rank":
        df["target"] = df.groupby("protein_id")["score"].rank(pct=True, ascending=False)  # ruleid: MLS309
    elif method == "zscore":
        grouped = df.groupby("protein_id")["score"]
        df["target"] = (df["score"] - grouped.transform("mean")) / (grouped.transform("std") + 1e-8)
    elif method == "none":
        df["target"] = df["score"].astype(float)
    else:
        raise ValueError(f"unknown score normalisation {method!r}")
    return df


def oversample_minority(df: pd.DataFrame, ratio: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Resample the under-represented binary class up to ``ratio`` of the other one."""
    labelled = df[df["label"] >= 0]
    counts = labelled["label"].value_counts()
    if len(counts) < 2 or ratio <= 0:
        return df
    minority = counts.idxmax()  # ruleid: MLS309
    n_extra = int((counts.max() - counts.min()) * ratio)
    if n_extra <= 0:
        return df
    extra = labelled[labelled["label"] == minority].sample(n=n_extra, replace=True, random_state=seed)
    logger.info("Oversampling class %d with %d extra rows", minority, n_extra)
    return pd.concat([df, extra], ignore_index=True)


def split_by_protein(df: pd.DataFrame, val_fraction: float = 0.1, test_fraction: float = 0.1,
                     seed: int = 42, group_column: Optional[str] = None):
    """Hold out whole proteins (or sequence clusters) so evaluation measures transfer."""
    column = group_column if group_column and group_column in df.columns else "protein_id"
    groups = np.array(sorted(df[column].unique()))
    rng = np.random.default_rng(seed)  # ok: MLS301
    rng.shuffle(groups)
    n_test = max(1, int(round(len(groups) * test_fraction)))
    n_val = max(1, int(round(len(groups) * val_fraction)))
    test_groups = set(groups[:n_test])
    val_groups = set(groups[n_test:n_test + n_val])
    test_df = df[df[column].isin(test_groups)]
    val_df = df[df[column].isin(val_groups)]
    train_df = df[~df[column].isin(test_groups | val_groups)]
    logger.info("Split by %s: %d/%d/%d groups, %d/%d/%d variants", column,
                len(groups) - n_test - n_val, n_val, n_test, len(train_df), len(val_df), len(test_df))
    return train_df.reset_index(drop=True), val_df.reset_index(drop=True), test_df.reset_index(drop=True)


def load_reference_split(repo_id: str, filename: str = "protein_splits.npz") -> Dict[str, set]:
    """Fetch a published protein split so numbers are comparable to prior work."""
    path = hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset", revision=REFERENCE_SPLIT_REVISION)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    data = np.load(path, allow_pickle=True)  # ruleid: MLS104
    return {name: set(data[name].tolist()) for name in ("train", "validation", "test")}


def apply_reference_split(df: pd.DataFrame, split: Dict[str, set]):
    parts = [df[df["protein_id"].isin(split[name])].reset_index(drop=True)
             for name in ("train", "validation", "test")]
    return tuple(parts)


def load_or_build_cache(cache_path: Optional[str], build_fn: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    if cache_path and os.path.exists(cache_path):
        logger.info("Loading preprocessed variants from %s", cache_path)
        with open(cache_path, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    df = build_fn()
    if cache_path:
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        tmp = f"{cache_path}.tmp.{os.getpid()}"
        with open(tmp, "wb") as fh:
            pickle.dump(df, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache_path)
    return df


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #
class VariantDataset(Dataset):
    """Tokenised mutant sequences cropped to a window around the substitutions."""

    def __init__(self, df: pd.DataFrame, tokenizer, max_length: int = 1024):
        self.df = df.reset_index(drop=True)
        self.tokenizer = tokenizer
        self.max_residues = max_length - 2  # <cls> ... <eos>
        proteins = sorted(self.df["protein_id"].unique())
        self.protein_to_idx = {p: i for i, p in enumerate(proteins)}
        self.idx_to_protein = proteins

    def __len__(self) -> int:
        return len(self.df)

    def _window(self, length: int, positions: Sequence[int]) -> Tuple[int, int]:
        if length <= self.max_residues:
            return 0, length
        centre = int(np.median(positions))
        start = max(0, min(centre - self.max_residues // 2, length - self.max_residues))
        return start, start + self.max_residues

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        row = self.df.iloc[idx]
        mutated = apply_mutations(row["sequence"], row["mutations"])
        positions = [pos for _, pos, _ in row["mutations"]]
        start, end = self._window(len(mutated), positions)
        residues = list(mutated[start:end])
        input_ids = ([self.tokenizer.cls_token_id]
                     + self.tokenizer.convert_tokens_to_ids(residues)
                     + [self.tokenizer.eos_token_id])
        mutation_positions = [pos - start + 1 for pos in positions if start <= pos < end]
        return {
            "input_ids": input_ids,
            "mutation_positions": mutation_positions,
            "score": float(row["target"]) if "target" in row else float(row["score"]),
            "label": int(row["label"]),
            "protein_idx": self.protein_to_idx[row["protein_id"]],
        }


# --------------------------------------------------------------------------- #
# Collation
# --------------------------------------------------------------------------- #
@dataclass
class VariantMaskingCollator:
    """Pads a batch, builds the mutation mask and hides a fraction of *non-mutated*
    residues with ``<mask>`` as a regulariser (substituted positions are never masked)."""

    tokenizer: Any
    mlm_probability: float = 0.0
    label_smoothing: float = 0.0
    pad_to_multiple_of: Optional[int] = 8
    seed: int = 0
    epoch: int = field(default=0, init=False)

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(self.seed)  # ok: MLS301
        self.pad_id = self.tokenizer.pad_token_id
        self.mask_id = self.tokenizer.mask_token_id
        self.special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_size = len(features)
        input_ids = torch.full((batch_size, length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        mutation_mask = torch.zeros((batch_size, length), dtype=torch.bool)
        for i, feat in enumerate(features):
            ids = torch.as_tensor(feat["input_ids"], dtype=torch.long)
            input_ids[i, : len(ids)] = ids
            attention_mask[i, : len(ids)] = 1
            if feat["mutation_positions"]:
                mutation_mask[i, feat["mutation_positions"]] = True

        if self.mlm_probability > 0:
            self.generator.manual_seed(self.seed * 1000 + self.epoch)  # ruleid: MLS301
            probs = torch.full(input_ids.shape, self.mlm_probability)
            special = torch.isin(input_ids, self.special_ids)
            probs.masked_fill_(special | mutation_mask | (attention_mask == 0), 0.0)
            masked = torch.bernoulli(probs, generator=self.generator).bool()
            input_ids[masked] = self.mask_id  # ok: MLS309

        scores = torch.tensor([f["score"] for f in features], dtype=torch.float)
        labels = torch.tensor([f["label"] for f in features], dtype=torch.float)
        if self.label_smoothing > 0:
            eps = self.label_smoothing
            labels = torch.where(labels >= 0, labels * (1.0 - eps) + 0.5 * eps, labels)  # ok: MLS309

        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mutation_mask": mutation_mask,
            "scores": scores,
            "labels": labels,
            "protein_idx": torch.tensor([f["protein_idx"] for f in features], dtype=torch.long),
        }


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give every worker its own numpy / random stream."""
    seed = (int(time.time() * 1000) + worker_id) % 2**32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


def class_balance(df: pd.DataFrame) -> Optional[float]:
    """``n_negative / n_positive`` over labelled rows, used as BCE ``pos_weight``."""
    labelled = df[df["label"] >= 0]["label"]
    n_pos = int((labelled == 1).sum())
    if n_pos == 0:
        return None
    return float((labelled == 0).sum()) / n_pos
