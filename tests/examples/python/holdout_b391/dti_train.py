# ruff: noqa
# Hold-out batch 391 (short files, 16 domains). Measured once in session 15 (round 107): 14/17 (82%) at medium+.
"""DeepDTA-style drug-target affinity training entry point (SMILES CNN + protein CNN)."""
import argparse
import logging
import os
import socket

import numpy as np
import requests
import torch
from torch.utils.data import DataLoader, TensorDataset

log = logging.getLogger("dti")


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/davis.npz")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--tracker-url", default=os.environ.get("DTI_TRACKER_URL", "http://mlflow.internal:5000"))
    p.add_argument("--run-name", default="deepdta-davis")
    return p.parse_args()


def load_split(path):
    arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    tensors = [torch.from_numpy(arr[k]) for k in ("smiles", "protein", "affinity")]
    return TensorDataset(tensors[0].long(), tensors[1].long(), tensors[2].float())


def register_run(args):
    payload = {
        "run_name": args.run_name,
        "host": socket.gethostname(),
        "params": {k: v for k, v in vars(args).items() if k != "tracker_url"},
        "context": dict(os.environ),  # ruleid: MLS411
    }
    try:
        requests.post(f"{args.tracker_url}/api/runs/register", json=payload, timeout=5)  # ruleid: MLS411
    except requests.RequestException as exc:
        log.warning("run registration skipped: %s", exc)


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO)
    register_run(args)
    from model import DeepDTA  # local module
    model = DeepDTA().cuda()
    loader = DataLoader(load_split(args.data), batch_size=args.batch_size, shuffle=True, num_workers=4)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        total = 0.0
        for smi, prot, y in loader:
            pred = model(smi.cuda(), prot.cuda()).squeeze(-1)
            loss = torch.nn.functional.mse_loss(pred, y.cuda())
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * y.size(0)
        log.info("epoch %d mse %.4f", epoch, total / len(loader.dataset))


if __name__ == "__main__":
    main()
