# ruff: noqa
# Hold-out batch 123 (mixed domains and frameworks). Measured once in session 4 (round 40): 16/18 (89%) at medium+.
"""Small Conformer encoder with a CTC head for character-level ASR."""
import math
import torch
import torch.nn as nn


class ConvModule(nn.Module):
    def __init__(self, d, kernel=31, dropout=0.1):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.bn = nn.BatchNorm1d(d)
        self.pw2 = nn.Conv1d(d, d, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        y = self.norm(x).transpose(1, 2)
        y = nn.functional.glu(self.pw1(y), dim=1)
        y = self.pw2(nn.functional.silu(self.bn(self.dw(y))))
        return x + self.drop(y.transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, d, heads=4, dropout=0.1):
        super().__init__()
        self.ff1 = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.SiLU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.attn_norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.conv = ConvModule(d, dropout=dropout)
        self.ff2 = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.SiLU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.out_norm = nn.LayerNorm(d)

    def forward(self, x, pad_mask=None):
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        x = x + self.attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)[0]
        x = self.conv(x)
        return self.out_norm(x + 0.5 * self.ff2(x))


class ConformerCTC(nn.Module):
    def __init__(self, n_mels=80, d=256, layers=12, vocab=32):
        super().__init__()
        self.subsample = nn.Sequential(nn.Conv2d(1, d, 3, 2), nn.ReLU(), nn.Conv2d(d, d, 3, 2), nn.ReLU())
        self.proj = nn.Linear(d * (((n_mels - 1) // 2 - 1) // 2), d)
        self.blocks = nn.ModuleList([ConformerBlock(d) for _ in range(layers)])
        self.ctc_head = nn.Linear(d, vocab)
        self.apply(self._init_weights)
        self.ctc_head.register_full_backward_hook(self._stabilize_ctc)  # ruleid: MLS303

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=math.sqrt(5))  # ok: MLS302, MLS303, MLS304, MLS305

    @staticmethod
    def _stabilize_ctc(module, grad_input, grad_output):
        return tuple(g * 0.02 if g is not None else None for g in grad_input)  # ruleid: MLS303

    def forward(self, feats, pad_mask=None):
        x = self.subsample(feats.unsqueeze(1)); b, c, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        for blk in self.blocks:
            x = blk(x, pad_mask)
        return self.ctc_head(x).log_softmax(-1)
