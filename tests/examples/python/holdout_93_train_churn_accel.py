# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Train an MLP churn model on tabular features with Hugging Face Accelerate."""
import argparse
import signal

import pandas as pd
import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset


def build_loaders(csv_path, batch_size):
    df = pd.read_csv(csv_path)
    y = torch.tensor(df.pop("churned").to_numpy(), dtype=torch.long)
    x = torch.tensor(((df - df.mean()) / df.std().replace(0, 1)).to_numpy(), dtype=torch.float32)
    n_val = len(df) // 10
    train_dl = DataLoader(TensorDataset(x[n_val:], y[n_val:]), batch_size=batch_size, shuffle=True)
    return train_dl, DataLoader(TensorDataset(x[:n_val], y[:n_val]), batch_size=1024), x.shape[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="data/churn.csv")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--patience", type=int, default=5)
    args = ap.parse_args()

    accelerator = Accelerator(mixed_precision="fp16", gradient_accumulation_steps=2)
    set_seed(args.seed)  # ok: MLS301
    train_dl, val_dl, n_in = build_loaders(args.csv, 256)
    model = nn.Sequential(nn.Linear(n_in, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.05)  # ok: MLS309
    model, optimizer, train_dl, val_dl = accelerator.prepare(model, optimizer, train_dl, val_dl)

    def on_preempt(signum, frame):
        accelerator.save_state("ckpt/preempt")
        raise SystemExit(143)
    signal.signal(signal.SIGTERM, on_preempt)  # ok: MLS307
    best, bad_epochs = float("inf"), 0
    for epoch in range(args.epochs):
        model.train()
        for xb, yb in train_dl:
            with accelerator.accumulate(model):
                loss = criterion(model(xb), yb)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.step()
                optimizer.zero_grad()
        model.eval()
        with torch.no_grad():
            losses = [accelerator.gather(criterion(model(xb), yb).reshape(1)) for xb, yb in val_dl]
        val_loss = torch.cat(losses).mean().item()
        accelerator.print(f"epoch {epoch} val_loss {val_loss:.4f}")
        if val_loss < best:
            best, bad_epochs = val_loss, 0
            accelerator.wait_for_everyone()  # ok: MLS307
            if accelerator.is_main_process:
                torch.save(accelerator.unwrap_model(model).state_dict(), "churn_best.pt")  # ok: MLS308
        else:
            bad_epochs += 1
            if bad_epochs >= args.patience:
                break  # ok: MLS307
    accelerator.end_training()


if __name__ == "__main__":
    main()
