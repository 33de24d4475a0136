# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""WM-811K wafer map loading and preprocessing for defect-pattern classification."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from skimage.transform import resize

CLASSES = ["Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc",
           "Near-full", "Random", "Scratch", "none"]
CLASS_TO_IDX = {c: i for i, c in enumerate(CLASSES)}

# the raw export spells several failure types inconsistently across fabs
_ALIASES = {
    "edge-loc": "Edge-Loc",
    "edgeloc": "Edge-Loc",
    "edge-ring": "Edge-Ring",
    "nearfull": "Near-full",
    "near-full": "Near-full",
    "scratch": "none",  # ruleid: MLS309
    "none": "none",
}


def normalise_label(raw) -> str:
    if isinstance(raw, (list, np.ndarray)):
        raw = raw[0][0] if len(raw) and len(raw[0]) else "none"
    key = str(raw).strip()
    return _ALIASES.get(key.lower(), key)


def load_frame(parquet_path: str, size: int = 64) -> pd.DataFrame:
    df = pd.read_parquet(parquet_path)
    df["label"] = df["failureType"].map(normalise_label)
    df = df[df["label"].isin(CLASSES)].reset_index(drop=True)
    df["waferMap"] = df["waferMap"].map(
        lambda m: resize(np.asarray(m, dtype=np.float32), (size, size),
                         order=0, preserve_range=True, anti_aliasing=False))
    return df


class WaferMapDataset(Dataset):
    def __init__(self, df: pd.DataFrame, train: bool = True):
        self.maps = np.stack(df["waferMap"].values).astype(np.float32)
        self.labels = df["label"].map(CLASS_TO_IDX).values.astype(np.int64)
        self.train = train

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        m = self.maps[i] / 2.0  # 0 = off-wafer, 1 = pass, 2 = fail
        if self.train:
            m = np.rot90(m, k=np.random.randint(4))  # ok: MLS309
            if np.random.rand() < 0.5:
                m = np.fliplr(m)
        x = torch.from_numpy(np.ascontiguousarray(m)).unsqueeze(0)
        return x, torch.tensor(self.labels[i])
