# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""Train a multi-label linear probe over TF-IDF features of radiology reports."""
import argparse
import logging
import pickle
import urllib.request
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

log = logging.getLogger("radrep")

FINDINGS = ["atelectasis", "cardiomegaly", "consolidation", "edema", "effusion",
            "pneumonia", "pneumothorax", "nodule", "fracture", "support_devices"]


def fetch_featurizer(uri: str, cache_dir: Path):
    cache_dir.mkdir(parents=True, exist_ok=True)
    local = cache_dir / Path(uri).name
    if not local.exists():
        log.info("downloading featurizer from %s", uri)
        urllib.request.urlretrieve(uri, local)
    with open(local, "rb") as fh:
        return pickle.load(fh)  # ruleid: MLS103


def build_loader(csv_path, vectorizer, batch_size, shuffle):
    df = pd.read_csv(csv_path)
    text = (df["findings"].fillna("") + " " + df["impression"].fillna("")).str.lower()
    x = torch.tensor(vectorizer.transform(text).toarray(), dtype=torch.float32)
    y = torch.tensor(df[FINDINGS].fillna(0).clip(lower=0).values, dtype=torch.float32)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--train-csv", required=True)
    p.add_argument("--featurizer-uri", default="https://models.radlab.example.org/tfidf_v3.pkl")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/radrep"))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)

    torch.manual_seed(args.seed)  # ok: MLS301
    vec = fetch_featurizer(args.featurizer_uri, args.cache_dir)
    loader = build_loader(args.train_csv, vec, 256, shuffle=True)
    model = nn.Linear(len(vec.vocabulary_), len(FINDINGS))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    crit = nn.BCEWithLogitsLoss()
    for epoch in range(args.epochs):
        total = 0.0
        for x, y in loader:
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * x.size(0)
        log.info("epoch %d loss %.4f", epoch, total / len(loader.dataset))
    torch.save(model.state_dict(), args.cache_dir / "probe.pt")


if __name__ == "__main__":
    main()
