# ruff: noqa
# Hold-out batch 453 (textbook, Conformer-CTC speech recognition with Lightning). Measured once in session 19 (round 123): 23/31 (74%) at medium+.
"""Conformer encoder (Gulati et al., 2020) with a CTC output layer, as a LightningModule."""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.utilities import grad_norm

from data import SpecAugment, Tokenizer
from decoding import WERAccumulator, greedy_decode


def make_pad_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """True at padded positions, shape (B, max_len)."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class Conv2dSubsampling(nn.Module):
    """Two stride-2 convolutions: 4x reduction in time (10 ms -> 40 ms frames)."""

    def __init__(self, n_mels: int, d_model: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, d_model, kernel_size=3, stride=2), nn.ReLU(),
            nn.Conv2d(d_model, d_model, kernel_size=3, stride=2), nn.ReLU(),
        )
        freq = ((n_mels - 1) // 2 - 1) // 2
        self.out = nn.Linear(d_model * freq, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        lengths = ((lengths - 1) // 2 - 1) // 2
        return x, lengths


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float, max_len: int = 10000):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)
        self.scale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x * self.scale + self.pe[:, : x.size(1)])


class FeedForward(nn.Module):
    def __init__(self, d_model: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, mult * d_model), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(mult * d_model, d_model), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        y, _ = self.attn(y, y, y, key_padding_mask=pad_mask, need_weights=False)
        return self.dropout(y)


class ConvolutionModule(nn.Module):
    def __init__(self, d_model: int, kernel_size: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, kernel_size=1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.batch_norm = nn.BatchNorm1d(d_model)
        self.pointwise_out = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        y = self.norm(x).transpose(1, 2)  # (B, D, T)
        y = F.glu(self.pointwise_in(y), dim=1)
        y = y.masked_fill(pad_mask.unsqueeze(1), 0.0)
        y = F.silu(self.batch_norm(self.depthwise(y)))
        return self.dropout(self.pointwise_out(y)).transpose(1, 2)


class ConformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ff_mult: int, conv_kernel: int, dropout: float):
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_mult, dropout)
        self.mhsa = SelfAttention(d_model, n_heads, dropout)
        self.conv = ConvolutionModule(d_model, conv_kernel, dropout)
        self.ff2 = FeedForward(d_model, ff_mult, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.mhsa(x, pad_mask)
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class ConformerEncoder(nn.Module):
    def __init__(self, n_mels: int, d_model: int, n_heads: int, n_layers: int, ff_mult: int,
                 conv_kernel: int, dropout: float):
        super().__init__()
        self.subsampling = Conv2dSubsampling(n_mels, d_model)
        self.pos_enc = PositionalEncoding(d_model, dropout)
        self.layers = nn.ModuleList(
            ConformerBlock(d_model, n_heads, ff_mult, conv_kernel, dropout) for _ in range(n_layers)
        )

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.subsampling(feats, lengths)
        x = self.pos_enc(x)
        pad_mask = make_pad_mask(lengths, x.size(1))
        for layer in self.layers:
            x = layer(x, pad_mask)
        return x, lengths


def noam_lambda(warmup_steps: int):
    """Linear warm-up followed by inverse square-root decay, peaking at 1.0."""
    def fn(step: int) -> float:
        step = max(step, 1)
        return min(step / warmup_steps, math.sqrt(warmup_steps / step))
    return fn


class ConformerCTC(pl.LightningModule):
    def __init__(self, vocab_size: int, tokenizer_model: Optional[str] = None, n_mels: int = 80,
                 d_model: int = 256, n_heads: int = 4, n_layers: int = 16, ff_mult: int = 4,
                 conv_kernel: int = 31, dropout: float = 0.1, blank_id: int = 0, lr: float = 2e-3,
                 weight_decay: float = 1e-3, warmup_steps: int = 10000,
                 betas: Sequence[float] = (0.9, 0.98), spec_augment: Optional[Dict[str, float]] = None,
                 weight_noise: float = 1e-3, weight_noise_start: int = 5000):
        super().__init__()
        self.save_hyperparameters()
        self.spec_augment = SpecAugment(**(spec_augment or {}))
        self.encoder = ConformerEncoder(n_mels, d_model, n_heads, n_layers, ff_mult, conv_kernel, dropout)
        self.ctc_head = nn.Linear(d_model, vocab_size)
        self.ctc_loss = nn.CTCLoss(blank=blank_id, reduction="mean", zero_infinity=True)
        self.tokenizer = Tokenizer(tokenizer_model) if tokenizer_model else None
        self._val_wer = WERAccumulator()

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x, out_lengths = self.encoder(feats, lengths)
        log_probs = F.log_softmax(self.ctc_head(x).float(), dim=-1)
        return log_probs, out_lengths

    def _ctc(self, log_probs, out_lengths, batch) -> torch.Tensor:
        return self.ctc_loss(log_probs.transpose(0, 1), batch["targets"], out_lengths, batch["target_lengths"])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        feats = self.spec_augment(batch["features"], batch["feature_lengths"])
        log_probs, out_lengths = self(feats, batch["feature_lengths"])
        loss = self._ctc(log_probs, out_lengths, batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=feats.size(0))
        return loss

    @torch.no_grad()
    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # variational weight noise regularises the encoder once the model has converged a bit
        if self.hparams.weight_noise > 0 and self.global_step >= self.hparams.weight_noise_start:
            for p in self.encoder.parameters():
                p.add_(torch.randn_like(p), alpha=self.hparams.weight_noise)  # ruleid: MLS302

    def on_before_optimizer_step(self, optimizer) -> None:
        norms = grad_norm(self, norm_type=2)
        self.log("grad_norm", norms["grad_2.0_norm_total"], on_step=True, on_epoch=False)

    def on_validation_epoch_start(self) -> None:
        self._val_wer.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        log_probs, out_lengths = self(batch["features"], batch["feature_lengths"])
        loss = self._ctc(log_probs, out_lengths, batch)
        self.log("val_loss", loss, sync_dist=True, batch_size=len(batch["texts"]))
        if self.tokenizer is None:
            return
        for ref, hyp in zip(batch["texts"], greedy_decode(log_probs, out_lengths, self.hparams.blank_id)):
            self._val_wer.update(ref, self.tokenizer.decode(hyp))

    def on_validation_epoch_end(self) -> None:
        stats = torch.tensor(self._val_wer.state(), dtype=torch.float64, device=self.device)
        stats = self.all_gather(stats)
        if stats.dim() > 1:
            stats = stats.sum(dim=0)
        self.log("val_wer", (stats[0] / stats[1].clamp_min(1.0)).float(), prog_bar=True)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr, betas=tuple(self.hparams.betas), eps=1e-9,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, noam_lambda(self.hparams.warmup_steps))  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
