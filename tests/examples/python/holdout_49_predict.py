# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""Batch inference: load a trained checkpoint and write class predictions to CSV."""
import argparse

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from models import build_model


def load_model(ckpt_path, arch, device):
    model = build_model(arch)
    if ckpt_path.endswith(".safetensors"):
        state = load_file(ckpt_path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(ckpt_path, map_location="cpu")  # ruleid: MLS102
        state = state.get("model", state)
    model.load_state_dict(state)
    return model.to(device).eval()


@torch.inference_mode()
def predict(model, features, device, batch_size=512):
    out = []
    for i in range(0, len(features), batch_size):
        x = torch.from_numpy(features[i:i + batch_size]).float().to(device)
        out.append(model(x).softmax(-1).cpu().numpy())
    return np.concatenate(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--features", required=True, help=".npy array of shape [N, D]")
    ap.add_argument("--out", default="predictions.csv")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    feats = np.load(args.features, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = load_model(args.ckpt, args.arch, device)
    probs = predict(model, feats, device)
    df = pd.DataFrame({"pred": probs.argmax(1), "confidence": probs.max(1)})
    df.to_csv(args.out, index_label="row")
    print(df["pred"].value_counts().sort_index())


if __name__ == "__main__":
    main()
