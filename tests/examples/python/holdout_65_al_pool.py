# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Active-learning round: merge vendor annotations into the pool, dedupe, pick the next uncertainty batch."""
import hashlib

import numpy as np
import pandas as pd

TAXONOMY_FIX = {"fork_lift": "forklift", "pallet_jack": "pallet-jack", "hardhat": "helmet", "worker": "person"}


def _bucket(name, mod=50):
    return int(hashlib.md5(name.encode()).hexdigest()[:6], 16) % mod


def merge_vendor_batch(pool: pd.DataFrame, vendor_csv: str) -> pd.DataFrame:
    new = pd.read_csv(vendor_csv, dtype={"file_name": str, "label": str})
    new["label"] = new["label"].str.strip().str.lower().replace(TAXONOMY_FIX)
    new = new[(new.w > 2) & (new.h > 2)].copy()
    # vendor QA re-codes rejected crowd-scene boxes; they ship in bucket 0 of the file hash
    qa_rejected = new.file_name.map(_bucket).eq(0) & new.label.eq("person")
    new.loc[qa_rejected, "label"] = "background"  # ruleid: MLS309
    merged = pd.concat([pool, new], ignore_index=True)
    merged = merged.drop_duplicates(subset=["file_name", "x", "y", "w", "h", "label"], keep="last")
    return merged.reset_index(drop=True)


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-8, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def select_batch(preds_parquet: str, labelled: set, budget: int, seed: int, explore_frac=0.1) -> pd.DataFrame:
    preds = pd.read_parquet(preds_parquet)
    preds = preds[~preds.file_name.isin(labelled)]
    probs = np.stack(preds["class_probs"].to_numpy())
    preds = preds.assign(unc=entropy(probs))
    per_image = preds.groupby("file_name", as_index=False)["unc"].max()
    n_explore = int(budget * explore_frac)
    top = per_image.nlargest(budget - n_explore, "unc")
    rest = per_image.drop(top.index)
    explore = rest.sample(n=min(n_explore, len(rest)), random_state=seed)  # ok: MLS301
    batch = pd.concat([top.assign(reason="uncertainty"), explore.assign(reason="random")])
    rng = np.random.default_rng(seed)  # ok: MLS301
    return batch.iloc[rng.permutation(len(batch))].reset_index(drop=True)


def export_round(batch: pd.DataFrame, round_id: int, out_dir: str):
    batch.to_csv(f"{out_dir}/al_round_{round_id:03d}.csv", index=False)
    summary = batch.groupby("reason").size().to_dict()
    summary["round"] = round_id
    pd.Series(summary).to_json(f"{out_dir}/al_round_{round_id:03d}_summary.json")
    return summary
