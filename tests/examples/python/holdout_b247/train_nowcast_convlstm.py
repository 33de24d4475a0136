# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""ConvLSTM precipitation nowcasting: six past radar frames in, six future frames out."""
import os

import torch
import torch.nn as nn

CKPT = os.environ.get("NOWCAST_CKPT", "checkpoints/last.pt")


class ConvLSTMCell(nn.Module):
    def __init__(self, cin, hidden, k=3):
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(cin + hidden, 4 * hidden, k, padding=k // 2)

    def forward(self, x, state):
        i, f, o, g = self.conv(torch.cat([x, state[0]], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class Nowcaster(nn.Module):
    def __init__(self, hidden=64, horizon=6):
        super().__init__()
        self.cell, self.out, self.horizon = ConvLSTMCell(1, hidden), nn.Conv2d(hidden, 1, 1), horizon

    def forward(self, frames):
        h = frames.new_zeros(frames.size(0), self.cell.hidden, *frames.shape[-2:])
        c = torch.zeros_like(h)
        for t in range(frames.size(1)):
            h, c = self.cell(frames[:, t], (h, c))
        preds, x = [], frames[:, -1]
        for _ in range(self.horizon):
            h, c = self.cell(x, (h, c))
            x = torch.sigmoid(self.out(h))
            preds.append(x)
        return torch.stack(preds, 1)


def resume(model, optimizer, path):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = ckpt["model"]
    for key in [k for k in state if k.endswith("conv.bias")]:
        state[key][model.cell.hidden: 2 * model.cell.hidden] -= 2.0  # ruleid: MLS302
    model.load_state_dict(state)
    optimizer.load_state_dict(ckpt["optim"])
    return ckpt.get("epoch", 0) + 1


def train(train_dl, val_dl, epochs=40):
    torch.manual_seed(0)  # ok: MLS301
    model = Nowcaster().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3)  # ok: MLS302, MLS303, MLS304, MLS305
    start = resume(model, opt, CKPT) if os.path.exists(CKPT) else 0
    for epoch in range(start, epochs):
        model.train()
        for past, future in train_dl:
            loss = nn.functional.mse_loss(model(past.cuda()), future.cuda())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        model.eval()
        with torch.no_grad():
            val = sum(nn.functional.mse_loss(model(p.cuda()), f.cuda()).item() for p, f in val_dl) / len(val_dl)
        sched.step(val)
        os.makedirs(os.path.dirname(CKPT), exist_ok=True)
        torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": epoch}, CKPT)
    return model
