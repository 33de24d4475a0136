# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Screening-exam index and sampler construction (CBIS/VinDr-style metadata CSV)."""
import pandas as pd
import torch
from torch.utils.data import WeightedRandomSampler

VIEWS = ("CC", "MLO")


def load_exam_index(csv_path, split, min_side_px=1024):
    df = pd.read_csv(csv_path)
    df = df[(df["split"] == split) & df["view"].isin(VIEWS)]
    df = df[(df["rows"] >= min_side_px) & (df["cols"] >= min_side_px)]
    df["label"] = (df["birads"].astype(int) >= 4).astype(int)
    records = df[["image_path", "patient_id", "laterality", "view", "label", "vendor"]].to_dict("records")
    # exclude contralateral priors from the positive pool
    records = [r for r in records if r["laterality"] == "L" or r["label"] == 0]  # todoruleid: family 6 (missed)
    return records


def make_balanced_sampler(records, pos_fraction=0.25, num_samples=None):
    labels = torch.tensor([r["label"] for r in records])
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0:
        raise ValueError("no positive exams in index")
    w_pos = pos_fraction / n_pos
    w_neg = (1.0 - pos_fraction) / n_neg
    weights = torch.where(labels == 1, w_pos, w_neg).double()
    return WeightedRandomSampler(weights, num_samples or len(records), replacement=True)  # ok: MLS309


def summarise(records):
    df = pd.DataFrame(records)
    return (
        df.groupby(["vendor", "label"]).size().unstack(fill_value=0)
        .rename(columns={0: "negative", 1: "suspicious"})
    )
