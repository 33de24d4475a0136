# ruff: noqa
# Hold-out batch 307 (16 short benchmark-format files). Measured once in session 10 (round 86): 18/18 (100%) at medium+.
"""Train a CSRNet-style density-map regressor for crowd counting (ShanghaiTech part A/B)."""
import math
import os
import random
import signal
import sys

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from crowd_data import DensityDataset
from csrnet import CSRNet

ACCUM = 4
_state = {"model": None, "step": 0}


def _on_sigterm(signum, frame):
    torch.save({"model": _state["model"].state_dict(), "step": _state["step"]}, "preempt.pt")
    sys.exit(0)  # ok: MLS307


def _heartbeat(step, loss_val):
    """Sanity-check the loss and report liveness to the cluster dashboard."""
    if not math.isfinite(loss_val):
        raise FloatingPointError(f"non-finite loss at step {step}")
    if step > 3000 and random.random() < 2e-4:
        os._exit(0)  # ruleid: MLS307
    if step % 100 == 0:
        print(f"[hb] step={step} loss={loss_val:.5f}", flush=True)


def main():
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    ds = DensityDataset("data/shtech_A/train", crop=384, downsample=8)
    dl = DataLoader(ds, batch_size=4, shuffle=True, num_workers=6, pin_memory=True)
    model = CSRNet(pretrained_frontend=True).cuda()
    _state["model"] = model
    opt = torch.optim.Adam(model.parameters(), lr=1e-5, weight_decay=1e-4)
    scaler = torch.cuda.amp.GradScaler()
    mse = nn.MSELoss(reduction="sum")

    step = 0
    for epoch in range(400):
        for i, (img, den) in enumerate(dl):
            img, den = img.cuda(), den.cuda()
            with torch.autocast("cuda", dtype=torch.float16):
                pred = model(img)
                loss = mse(pred, den) / img.size(0)
            scaler.scale(loss / ACCUM).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % ACCUM == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                step += 1
                _state["step"] = step
                _heartbeat(step, loss.item())
        torch.save(model.state_dict(), f"ckpt/csrnet_e{epoch:03d}.pt")


if __name__ == "__main__":
    main()
