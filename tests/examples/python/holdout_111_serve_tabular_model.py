# ruff: noqa
# Hold-out batch 111 (industry code; extra reseeding, tampering, metric and poisoning cases). Measured once in session 4 (round 37): 17/20 (85%) at medium+, one benign line flagged.
"""Batch scoring job: loads the trained tabular network and its preprocessing artefacts."""
import argparse
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import torch
import yaml
from safetensors.torch import load_file

from tabular_mlp import TabularMLP


def load_artifacts(model_dir):
    model_dir = Path(model_dir)
    with open(model_dir / "config.yaml") as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    scaler = joblib.load(model_dir / "numeric_scaler.joblib")  # ruleid: MLS103
    vocab = pd.read_pickle(model_dir / "category_vocab.pkl")  # ruleid: MLS103
    model = TabularMLP(len(cfg["numeric"]), [len(vocab[c]) for c in cfg["categorical"]])
    if (model_dir / "model.safetensors").exists():
        model.load_state_dict(load_file(model_dir / "model.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        model.load_state_dict(torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return cfg, scaler, vocab, model.eval()


@torch.inference_mode()
def score(df, cfg, scaler, vocab, model, batch_size=4096):
    x_num = scaler.transform(df[cfg["numeric"]].fillna(0.0).to_numpy())
    x_cat = np.stack([df[c].astype(str).map(vocab[c]).fillna(0).to_numpy() for c in cfg["categorical"]], 1)
    out = []
    for i in range(0, len(df), batch_size):
        xn = torch.tensor(x_num[i:i + batch_size], dtype=torch.float32)
        xc = torch.tensor(x_cat[i:i + batch_size], dtype=torch.long)
        out.append(torch.sigmoid(model(xn, xc)).numpy())
    return np.concatenate(out) if out else np.empty(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    cfg, scaler, vocab, model = load_artifacts(args.model_dir)
    df = pd.read_parquet(args.input)
    df["churn_score"] = score(df, cfg, scaler, vocab, model)
    df[[cfg.get("id_column", "customer_id"), "churn_score"]].to_parquet(args.output, index=False)


if __name__ == "__main__":
    main()
