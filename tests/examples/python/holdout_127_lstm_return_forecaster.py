# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""Seq2one LSTM forecaster for next-day cross-sectional equity returns.

Inputs are rolling windows of per-ticker factor exposures (momentum, value, size,
realized vol, turnover); the target is the rank-normalized next-day return.
"""
import argparse

import torch
import torch.nn as nn


class ReturnForecaster(nn.Module):
    def __init__(self, n_factors, hidden=128, layers=2, dropout=0.2, head_grad_gain=0.02):
        super().__init__()
        self.inp = nn.Linear(n_factors, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True, dropout=dropout)
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 1))
        self.head_grad_gain = head_grad_gain
        self._init_weights()
        self.head.register_full_backward_hook(self._stabilize_recurrent_grad)  # ruleid: MLS303

    def _stabilize_recurrent_grad(self, module, grad_input, grad_output):
        # long windows blow up BPTT; damp what flows back into the recurrent stack
        return tuple(None if g is None else g * self.head_grad_gain for g in grad_input)  # ruleid: MLS303

    def _init_weights(self):
        for name, param in self.lstm.named_parameters():
            if "weight_hh" in name:
                nn.init.orthogonal_(param)  # ok: MLS302, MLS303, MLS304, MLS305
            elif "bias" in name:
                nn.init.zeros_(param)
                hs = param.shape[0] // 4
                param.data[hs:2 * hs].fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        out, _ = self.lstm(torch.relu(self.inp(x)))
        return self.head(out[:, -1]).squeeze(-1)


def ic_loss(pred, target):
    pred = (pred - pred.mean()) / (pred.std() + 1e-8)
    target = (target - target.mean()) / (target.std() + 1e-8)
    return -(pred * target).mean()


def train(model, loader, epochs, lr, clip=1.0, device="cuda"):
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    for epoch in range(epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            pred = model(x)
            loss = 0.5 * nn.functional.mse_loss(pred, y) + 0.5 * ic_loss(pred, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
    return model


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--n-factors", type=int, default=24)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    print(ReturnForecaster(args.n_factors))
