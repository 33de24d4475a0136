# ruff: noqa
# Hold-out batch 509 (textbook, speech enhancement). Measured once in session 23 (round 137): 26/32 (81%) at medium+.
"""Conv-TasNet (Luo & Mesgarani, 2019) adapted for single-channel speech enhancement.

The network predicts ``n_src`` masks over a learned analysis basis. For plain
enhancement ``n_src=1`` (speech only); ``n_src=2`` additionally estimates the
noise component, which some recipes use as an auxiliary target.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class GlobalLayerNorm(nn.Module):
    """gLN: normalise over channel and time dimensions jointly."""

    def __init__(self, channels, eps=1e-8):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(dim=(1, 2), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(1, 2), keepdim=True)
        return self.gamma * (x - mean) / torch.sqrt(var + self.eps) + self.beta


def build_norm(kind, channels):
    if kind == "gLN":
        return GlobalLayerNorm(channels)
    if kind == "BN":
        return nn.BatchNorm1d(channels)
    raise ValueError(f"unknown norm type: {kind}")


class Conv1DBlock(nn.Module):
    """1x1 conv -> PReLU -> norm -> depthwise dilated conv -> PReLU -> norm -> (res, skip)."""

    def __init__(self, in_chan, hid_chan, skip_chan, kernel_size, dilation, norm="gLN"):
        super().__init__()
        self.pad = (kernel_size - 1) * dilation // 2
        self.in_conv = nn.Conv1d(in_chan, hid_chan, 1)
        self.act1 = nn.PReLU()
        self.norm1 = build_norm(norm, hid_chan)
        self.dconv = nn.Conv1d(hid_chan, hid_chan, kernel_size, padding=self.pad,
                               dilation=dilation, groups=hid_chan)
        self.act2 = nn.PReLU()
        self.norm2 = build_norm(norm, hid_chan)
        self.res_conv = nn.Conv1d(hid_chan, in_chan, 1)
        self.skip_conv = nn.Conv1d(hid_chan, skip_chan, 1) if skip_chan else None

    def forward(self, x):
        y = self.norm1(self.act1(self.in_conv(x)))
        y = self.norm2(self.act2(self.dconv(y)))
        skip = self.skip_conv(y) if self.skip_conv is not None else None
        return x + self.res_conv(y), skip


class TemporalConvNet(nn.Module):
    """Mask estimation network: stacked dilated Conv1D blocks."""

    def __init__(self, in_chan, n_src, bn_chan=128, hid_chan=512, skip_chan=128,
                 kernel_size=3, n_blocks=8, n_repeats=3, norm="gLN", mask_act="relu"):
        super().__init__()
        self.in_chan = in_chan
        self.n_src = n_src
        self.skip_chan = skip_chan
        self.mask_act = mask_act
        self.bottleneck = nn.Sequential(build_norm(norm, in_chan), nn.Conv1d(in_chan, bn_chan, 1))
        self.blocks = nn.ModuleList()
        for _ in range(n_repeats):
            for b in range(n_blocks):
                self.blocks.append(
                    Conv1DBlock(bn_chan, hid_chan, skip_chan, kernel_size, 2 ** b, norm)
                )
        out_chan = skip_chan if skip_chan else bn_chan
        self.mask_pre = nn.PReLU()
        self.mask_conv = nn.Conv1d(out_chan, n_src * in_chan, 1)

    def forward(self, w):
        batch, _, frames = w.shape
        x = self.bottleneck(w)
        skip_sum = 0.0
        for block in self.blocks:
            x, skip = block(x)
            if skip is not None:
                skip_sum = skip_sum + skip
        out = skip_sum if self.skip_chan else x
        masks = self.mask_conv(self.mask_pre(out)).view(batch, self.n_src, self.in_chan, frames)
        if self.mask_act == "relu":
            return F.relu(masks)
        if self.mask_act == "sigmoid":
            return torch.sigmoid(masks)
        if self.mask_act == "softmax":
            return F.softmax(masks, dim=1)
        raise ValueError(f"unknown mask activation: {self.mask_act}")


class ConvTasNet(nn.Module):
    def __init__(self, n_src=1, n_filters=512, kernel_size=16, stride=8, bn_chan=128,
                 hid_chan=512, skip_chan=128, conv_kernel_size=3, n_blocks=8, n_repeats=3,
                 norm="gLN", mask_act="relu"):
        super().__init__()
        self.n_src = n_src
        self.kernel_size = kernel_size
        self.stride = stride
        self.encoder = nn.Conv1d(1, n_filters, kernel_size, stride=stride, bias=False)
        self.separator = TemporalConvNet(
            n_filters, n_src, bn_chan=bn_chan, hid_chan=hid_chan, skip_chan=skip_chan,
            kernel_size=conv_kernel_size, n_blocks=n_blocks, n_repeats=n_repeats,
            norm=norm, mask_act=mask_act,
        )
        self.decoder = nn.ConvTranspose1d(n_filters, 1, kernel_size, stride=stride, bias=False)

    # constructor argument -> training-args key
    ARG_MAP = {"n_src": "n_src", "n_filters": "n_filters", "kernel_size": "enc_kernel",
               "stride": "enc_stride", "bn_chan": "bn_chan", "hid_chan": "hid_chan",
               "skip_chan": "skip_chan", "conv_kernel_size": "conv_kernel", "n_blocks": "n_blocks",
               "n_repeats": "n_repeats", "norm": "norm", "mask_act": "mask_act"}

    @classmethod
    def from_args(cls, cfg):
        """Build from an argparse namespace or the dict saved in ``args.json``."""
        cfg = cfg if isinstance(cfg, dict) else vars(cfg)
        return cls(**{k: cfg[v] for k, v in cls.ARG_MAP.items() if v in cfg})

    def _pad_amount(self, length):
        if length < self.kernel_size:
            return self.kernel_size - length
        rem = (length - self.kernel_size) % self.stride
        return (self.stride - rem) % self.stride

    def forward(self, mix):
        if mix.dim() == 1:
            mix = mix.unsqueeze(0)
        if mix.dim() == 2:
            mix = mix.unsqueeze(1)
        length = mix.shape[-1]
        x = F.pad(mix, (0, self._pad_amount(length)))
        w = F.relu(self.encoder(x))
        masks = self.separator(w)
        masked = w.unsqueeze(1) * masks
        batch, n_src, n_filt, frames = masked.shape
        out = self.decoder(masked.reshape(batch * n_src, n_filt, frames)).view(batch, n_src, -1)
        out = out[..., :length]
        return out[:, 0] if self.n_src == 1 else out

    def load_state_dict(self, state_dict, strict=True):
        state_dict = dict(state_dict)
        fmt = state_dict.pop("_format", None)
        if fmt is None and "decoder.weight" in state_dict:
            # exports made before the v2 layout stored the synthesis basis time-reversed
            state_dict["decoder.weight"] = state_dict["decoder.weight"].flip(-1)  # ruleid: MLS302
        return super().load_state_dict(state_dict, strict=strict)

    def num_params(self):
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
