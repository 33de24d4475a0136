# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Multi-GPU ImageNet-subset training entry point built on accelerate (launched by slurm_submit.py)."""
import argparse
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import resnet50

_STOP = {"flag": False}


def fetch(url, dest, retries=4, backoff=5.0):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(backoff * 2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def main():
    ap = argparse.ArgumentParser()
    for flag, default in (("--lr", 0.2), ("--epochs", 90), ("--batch-size", 128), ("--seed", 0)):
        ap.add_argument(flag, type=type(default), default=default)
    ap.add_argument("--out-dir", default="runs/in100")
    cfg = ap.parse_args()
    acc = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=2)
    set_seed(cfg.seed, device_specific=True)  # ok: MLS301
    signal.signal(signal.SIGTERM, lambda *_: _STOP.update(flag=True))  # ok: MLS307
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412

    if acc.is_main_process:
        fetch("https://data.example.com/lab/imagenet100_index.json", "index.json")
    acc.wait_for_everyone()  # ok: MLS307

    model = resnet50(num_classes=100)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True)
    cache = torch.load("in100_train_cache.pt", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    loader = DataLoader(TensorDataset(cache["x"], cache["y"]), batch_size=cfg.batch_size, shuffle=True)
    model, opt, loader = acc.prepare(model, opt, loader)

    out = Path(cfg.out_dir)
    for epoch in range(cfg.epochs):
        for x, y in loader:
            with acc.accumulate(model):
                loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
                acc.backward(loss)
                opt.step()
                opt.zero_grad()
            if _STOP["flag"]:
                break
        if acc.is_main_process:  # ok: MLS308
            acc.save({"model": acc.unwrap_model(model).state_dict(), "epoch": epoch, "rev": rev},
                     out / "last.pt")
        if _STOP["flag"]:
            acc.wait_for_everyone()
            sys.exit(0)  # ok: MLS307


if __name__ == "__main__":
    main()
