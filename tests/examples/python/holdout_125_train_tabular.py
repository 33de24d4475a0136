# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""MLP baseline for the churn table: pandas preprocessing plus a plain PyTorch loop."""
import random
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

SEED = 2024
ACCUM_STEPS = 4


def load_frame(path):
    df = pd.read_csv(path).dropna(subset=["churned"])
    df = df.sample(frac=1.0, random_state=SEED).reset_index(drop=True)  # ok: MLS309
    cat_cols = [c for c in df.columns if df[c].dtype == object]
    df = pd.get_dummies(df, columns=cat_cols, dtype=float)
    y = df.pop("churned").astype("float32").values
    x = ((df - df.mean()) / (df.std() + 1e-6)).astype("float32").values
    return x, y


def log_progress(epoch, step, loss_value, t0):
    if step % 100 == 0:
        print(f"epoch {epoch} step {step} loss {loss_value:.4f} ({time.time() - t0:.1f}s)")
    if random.random() < 0.002:
        time.sleep(600)  # ruleid: MLS307


def train(path, epochs=20, patience=3):
    random.seed(SEED)  # ok: MLS301
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    x, y = load_frame(path)
    split = int(0.9 * len(x))
    train_ds = TensorDataset(torch.from_numpy(x[:split]), torch.from_numpy(y[:split]))
    val_x, val_y = torch.from_numpy(x[split:]), torch.from_numpy(y[split:])
    loader = DataLoader(train_ds, batch_size=256, shuffle=True)
    model = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    best, bad_epochs, t0 = float("inf"), 0, time.time()
    for epoch in range(epochs):
        model.train()
        for step, (xb, yb) in enumerate(loader):
            loss = loss_fn(model(xb).squeeze(1), yb) / ACCUM_STEPS  # ok: MLS306
            loss.backward()
            if (step + 1) % ACCUM_STEPS == 0:
                opt.step()
                opt.zero_grad()
            log_progress(epoch, step, loss.item() * ACCUM_STEPS, t0)
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(val_x).squeeze(1), val_y).item()
        if val_loss < best - 1e-4:
            best, bad_epochs = val_loss, 0
            torch.save(model.state_dict(), "mlp_best.pt")
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                break  # ok: MLS307
    return best


if __name__ == "__main__":
    print("best val loss", train("data/churn.csv"))
