# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Spatio-temporal graph convolution blocks (Chebyshev GCN + gated temporal conv) for traffic flow."""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class ChebConv(nn.Module):
    def __init__(self, c_in, c_out, k=3):
        super().__init__()
        self.k = k
        self.theta = nn.Parameter(torch.empty(k, c_in, c_out))
        self.bias = nn.Parameter(torch.empty(c_out))
        nn.init.xavier_uniform_(self.theta)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x, lap):  # x: (B, T, N, C)
        tx = [x, torch.einsum("nm,btmc->btnc", lap, x)]
        for _ in range(2, self.k):
            tx.append(2 * torch.einsum("nm,btmc->btnc", lap, tx[-1]) - tx[-2])
        return sum(torch.einsum("btnc,cd->btnd", t, self.theta[i]) for i, t in enumerate(tx)) + self.bias


class STBlock(nn.Module):
    def __init__(self, c_in, c_hid, c_out):
        super().__init__()
        self.t1 = nn.Conv2d(c_in, 2 * c_hid, (3, 1), padding=(1, 0))
        self.gcn = ChebConv(c_hid, c_hid)
        self.t2 = nn.Conv2d(c_hid, c_out, (3, 1), padding=(1, 0))
        self.norm = nn.LayerNorm(c_out)

    def forward(self, x, lap):  # (B, C, T, N)
        h = F.glu(self.t1(x), dim=1)
        h = F.relu(self.gcn(h.permute(0, 2, 3, 1), lap)).permute(0, 3, 1, 2)
        h = self.t2(h)
        return self.norm(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for e, p in zip(self.ema.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class ActivationStats:
    """Records per-block output RMS for TensorBoard; does not modify outputs."""

    def __init__(self, model):
        self.rms = {}
        self.handles = [m.register_forward_hook(self._hook(n))  # ok: MLS302, MLS303, MLS304, MLS305
                        for n, m in model.named_modules() if isinstance(m, STBlock)]

    def _hook(self, name):
        def fn(module, inputs, output):
            self.rms[name] = output.detach().pow(2).mean().sqrt().item()
        return fn

    def remove(self):
        for h in self.handles:
            h.remove()
