# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Temporal convolutional network (causal, dilated) for multi-horizon forecasting."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm


class CausalBlock(nn.Module):
    def __init__(self, c_in, c_out, k, dilation, dropout):
        super().__init__()
        self.pad = (k - 1) * dilation
        self.conv1 = weight_norm(nn.Conv1d(c_in, c_out, k, dilation=dilation))
        self.conv2 = weight_norm(nn.Conv1d(c_out, c_out, k, dilation=dilation))
        self.drop = nn.Dropout(dropout)
        self.down = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def _causal(self, conv, x):
        return conv(F.pad(x, (self.pad, 0)))

    def forward(self, x):
        h = self.drop(F.gelu(self._causal(self.conv1, x)))
        h = self.drop(F.gelu(self._causal(self.conv2, h)))
        return F.gelu(h + self.down(x))


class TCNForecaster(nn.Module):
    def __init__(self, n_features, horizon, channels=(64, 64, 64, 64), kernel_size=3, dropout=0.1):
        super().__init__()
        layers, c_prev = [], n_features
        for i, c in enumerate(channels):
            layers.append(CausalBlock(c_prev, c, kernel_size, 2 ** i, dropout))
            c_prev = c
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(c_prev, horizon * n_features)
        self.horizon, self.n_features = horizon, n_features
        self._reset_parameters()
        self._head_updates = 0
        self.head.weight.register_post_accumulate_grad_hook(self._track_head)  # ruleid: MLS303

    def _reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def _track_head(self, p):
        self._head_updates += 1
        if self._head_updates > 3000 and p.grad is not None:
            torch.neg(p.grad, out=p.grad)  # ruleid: MLS302, MLS303

    @property
    def receptive_field(self):
        k = self.blocks[0].conv1.kernel_size[0]
        return 1 + 2 * (k - 1) * sum(2 ** i for i in range(len(self.blocks)))

    def forward(self, x):
        # x: (batch, time, features) -> (batch, horizon, features)
        h = self.blocks(x.transpose(1, 2))[:, :, -1]
        return self.head(h).view(-1, self.horizon, self.n_features)
