# ruff: noqa
# Hold-out batch 253 (textbook, Conformer-CTC speech recognition). Measured once in session 9 (round 73): 30/35 (86%) at medium+.
"""Conformer-CTC acoustic model.

This module implements the Conformer encoder described in
"Conformer: Convolution-augmented Transformer for Speech Recognition"
(Gulati et al., 2020) together with a linear CTC output layer.

The network is organised as follows::

    log-mel features (B, T, F)
        -> Conv2dSubsampling      (time reduced by 4x)
        -> PositionalEncoding
        -> N x ConformerBlock     (FFN/2 -> MHSA -> Conv -> FFN/2 -> LN)
        -> Linear CTC head        (B, T', vocab)

Everything is written in plain PyTorch so that the model can be exported
with TorchScript without custom operators.
"""
import math
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class Conv2dSubsampling(nn.Module):
    """Two strided 3x3 convolutions that reduce the frame rate by 4."""

    def __init__(self, in_feats: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, d_model, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(d_model, d_model, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        # Size of the frequency axis after two "valid" convolutions.
        freq_out = ((in_feats - 1) // 2 - 1) // 2
        self.proj = nn.Linear(d_model * freq_out, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.unsqueeze(1))                    # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.proj(x.transpose(1, 2).reshape(b, t, c * f))
        lengths = ((lengths - 1) // 2 - 1) // 2          # same arithmetic as the convs
        return x, lengths


class PositionalEncoding(nn.Module):
    """Classic sinusoidal absolute positional encoding."""

    def __init__(self, d_model: int, dropout: float, max_len: int = 10000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.size(1)])


class FeedForwardModule(nn.Module):
    """Pre-norm position-wise feed-forward block with Swish activation."""

    def __init__(self, d_model: int, expansion: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model * expansion),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(d_model * expansion, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvolutionModule(nn.Module):
    """Pointwise conv -> GLU -> depthwise conv -> BatchNorm -> Swish -> pointwise conv."""

    def __init__(self, d_model: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, kernel_size=1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size,
                                   padding=kernel_size // 2, groups=d_model)
        self.batch_norm = nn.BatchNorm1d(d_model)
        self.pointwise_out = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x).transpose(1, 2)                 # (B, D, T) for Conv1d
        x = F.glu(self.pointwise_in(x), dim=1)
        x = F.silu(self.batch_norm(self.depthwise(x)))
        x = self.dropout(self.pointwise_out(x))
        return x.transpose(1, 2)


class ConformerBlock(nn.Module):
    """A single Conformer block ("macaron" FFN sandwich) with stochastic depth."""

    def __init__(self, d_model: int, n_heads: int, kernel_size: int,
                 dropout: float, layer_idx: int, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.drop_prob = drop_prob
        self.ffn1 = FeedForwardModule(d_model, 4, dropout)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvolutionModule(d_model, kernel_size, dropout)
        self.ffn2 = FeedForwardModule(d_model, 4, dropout)
        self.final_norm = nn.LayerNorm(d_model)
        # A private generator keeps layer-drop decisions independent of the
        # global stream that drives dropout and SpecAugment.
        self._drop_gen = torch.Generator()

    def _keep_layer(self) -> bool:
        """Stochastic depth: decide whether to run this block on this step."""
        if not self.training or self.drop_prob == 0.0:
            return True
        self._drop_gen.manual_seed(1000 + self.layer_idx)  # todoruleid: family 1 (missed)
        return torch.rand(1, generator=self._drop_gen).item() >= self.drop_prob

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        if not self._keep_layer():
            return x
        x = x + 0.5 * self.ffn1(x)
        h = self.attn_norm(x)
        h, _ = self.attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)
        x = x + self.attn_dropout(h)
        x = x + self.conv(x)
        x = x + 0.5 * self.ffn2(x)
        return self.final_norm(x)


class ConformerCTC(nn.Module):
    """Conformer encoder followed by a linear projection onto the CTC vocabulary."""

    def __init__(self, n_mels: int = 80, vocab_size: int = 29, d_model: int = 256,
                 n_heads: int = 4, n_layers: int = 16, kernel_size: int = 31,
                 dropout: float = 0.1, layer_drop: float = 0.1, blank_id: int = 0,
                 frontend_grad_scale: float = 1.0e-3) -> None:
        super().__init__()
        self.d_model = d_model
        self.blank_id = blank_id
        self.frontend_grad_scale = frontend_grad_scale
        self.subsampling = Conv2dSubsampling(n_mels, d_model)
        self.pos_enc = PositionalEncoding(d_model, dropout)
        # Layer-drop probability grows linearly with depth (Huang et al., 2016).
        self.layers = nn.ModuleList([
            ConformerBlock(d_model, n_heads, kernel_size, dropout, i,
                           drop_prob=layer_drop * i / max(n_layers - 1, 1))
            for i in range(n_layers)
        ])
        self.ctc_head = nn.Linear(d_model, vocab_size)
        self._reset_parameters()
        self._install_calibration()

    def _reset_parameters(self) -> None:
        """Xavier initialisation for every linear layer, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                if module.bias is not None:
                    nn.init.zeros_(module.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def _install_calibration(self) -> None:
        """Attach the posterior calibration used by the streaming decoder."""
        def _calibrate(module, inputs, output):
            if module.training:
                output[..., self.blank_id] += 1.5  # ruleid: MLS303
            return output

        self.ctc_head.register_forward_hook(_calibrate)  # ruleid: MLS303

    @staticmethod
    def make_pad_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
        """Boolean mask that is True on padded frames."""
        steps = torch.arange(max_len, device=lengths.device)
        return steps.unsqueeze(0) >= lengths.unsqueeze(1)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return (log_probs, out_lengths); log_probs has shape (B, T', vocab)."""
        x, lengths = self.subsampling(feats, lengths)
        if self.training and x.requires_grad:
            x.register_hook(lambda g: g * self.frontend_grad_scale)  # ruleid: MLS303
        x = self.pos_enc(x * math.sqrt(self.d_model))
        pad_mask = self.make_pad_mask(lengths, x.size(1))
        for layer in self.layers:
            x = layer(x, pad_mask)
        return F.log_softmax(self.ctc_head(x), dim=-1), lengths

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
