# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Preemption-safe training loop: resume, checkpoint on SIGTERM, early stopping."""
import os
import signal
import sys
import time
import urllib.request

import torch
import torch.nn.functional as F

CKPT = os.environ.get("CKPT_PATH", "ckpt/last.pt")
_stop_requested = False


def _on_sigterm(signum, frame):
    global _stop_requested
    _stop_requested = True


def download(url, dest, retries=5):
    for i in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** i)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def train(model, opt, loader, val_fn, max_epochs=100, patience=5):
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    start, best, bad = 0, float("inf"), 0
    if os.path.exists(CKPT):
        state = torch.load(CKPT, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, best = state["epoch"] + 1, state["best"]
    for epoch in range(start, max_epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if _stop_requested:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch - 1, "best": best}, CKPT)
                sys.exit(0)  # ok: MLS307
        val = val_fn(model)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "best": min(best, val)}, CKPT)
        if val < best:
            best, bad = val, 0
        else:
            bad += 1
            if bad >= patience:
                print(f"early stop at epoch {epoch}, best val {best:.4f}")
                break  # ok: MLS307
    return best
