# ruff: noqa
# Hold-out batch 485 (textbook, Conformer-CTC speech recognition with Lightning). Measured once in session 21 (round 131): 19/30 (63%) at medium+.
"""Conformer encoder with a CTC head, wrapped as a LightningModule."""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Optional, Tuple

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_only

from data import SpecAugment
from decoding import WERStats, ctc_greedy_decode

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- building blocks
class Conv2dSubsampling(nn.Module):
    """Two stride-2 convolutions: 4x reduction in time."""

    def __init__(self, in_feats: int, d_model: int, channels: int = 256):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.SiLU(),
        )
        out_f = math.ceil(math.ceil(in_feats / 2) / 2)
        self.proj = nn.Linear(channels * out_f, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.unsqueeze(1))              # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.proj(x.transpose(1, 2).reshape(b, t, c * f))
        for _ in range(2):
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        return x, lengths


class RelPositionalEncoding(nn.Module):
    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        pe = torch.zeros(max_len, d_model)
        pos = torch.arange(max_len).unsqueeze(1).float()
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)
        self.xscale = math.sqrt(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x * self.xscale + self.pe[:, : x.size(1)])


class FeedForward(nn.Module):
    def __init__(self, d_model: int, expansion: int = 4, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model * expansion), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(d_model * expansion, d_model), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    def __init__(self, d_model: int, kernel_size: int = 31, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.dw = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.bn = nn.BatchNorm1d(d_model)
        self.pw2 = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm(x).masked_fill(pad_mask.unsqueeze(-1), 0.0).transpose(1, 2)
        x = F.glu(self.pw1(x), dim=1)
        x = F.silu(self.bn(self.dw(x)))
        return self.dropout(self.pw2(x).transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ff_expansion: int = 4, kernel_size: int = 31,
                 dropout: float = 0.1):
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_expansion, dropout)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.attn_drop = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, kernel_size, dropout)
        self.ff2 = FeedForward(d_model, ff_expansion, dropout)
        self.out_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        h, _ = self.attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)
        x = x + self.attn_drop(h)
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x)


class ConformerEncoder(nn.Module):
    def __init__(self, n_mels: int = 80, d_model: int = 256, n_layers: int = 16, n_heads: int = 4,
                 ff_expansion: int = 4, kernel_size: int = 31, dropout: float = 0.1):
        super().__init__()
        self.subsample = Conv2dSubsampling(n_mels, d_model)
        self.pos = RelPositionalEncoding(d_model, dropout=dropout)
        self.layers = nn.ModuleList(
            ConformerBlock(d_model, n_heads, ff_expansion, kernel_size, dropout) for _ in range(n_layers)
        )

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.subsample(feats, lengths)
        x = self.pos(x)
        pad_mask = torch.arange(x.size(1), device=x.device)[None, :] >= lengths[:, None]
        for layer in self.layers:
            x = layer(x, pad_mask)
        return x, lengths


def noam_lambda(warmup: int, d_model: int, peak_scale: float = 1.0):
    def fn(step: int) -> float:
        step = max(step, 1)
        return peak_scale * (d_model ** -0.5) * min(step ** -0.5, step * warmup ** -1.5)
    return fn


# --------------------------------------------------------------------------- lightning module
class ConformerCTC(pl.LightningModule):
    def __init__(self, vocab_size: int, n_mels: int = 80, d_model: int = 256, n_layers: int = 16,
                 n_heads: int = 4, kernel_size: int = 31, dropout: float = 0.1, lr: float = 5.0,
                 weight_decay: float = 1e-3, warmup_steps: int = 10000,
                 weight_noise_std: float = 0.0, weight_noise_start: int = 20000,
                 spec_augment: Optional[Dict[str, Any]] = None, blank_id: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = ConformerEncoder(n_mels, d_model, n_layers, n_heads, kernel_size=kernel_size,
                                        dropout=dropout)
        self.ctc_head = nn.Linear(d_model, vocab_size)
        self.spec_augment = SpecAugment(**(spec_augment or {}))
        self.tokenizer = None            # attached by the training script
        self._val_stats = WERStats()

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        enc, enc_lens = self.encoder(feats, lengths)
        return F.log_softmax(self.ctc_head(enc).float(), dim=-1), enc_lens

    def _ctc_loss(self, log_probs, out_lens, targets, target_lens) -> torch.Tensor:
        return F.ctc_loss(log_probs.transpose(0, 1), targets, out_lens, target_lens,
                          blank=self.hparams.blank_id, reduction="mean", zero_infinity=True)

    # ------------------------------------------------------------------ train
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        feats, feat_lens, tokens, tok_lens = batch
        if self.training and self.trainer is not None and self.trainer.training:
            return self.spec_augment(feats, feat_lens), feat_lens, tokens, tok_lens
        return batch

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        std = self.hparams.weight_noise_std
        if std > 0 and self.global_step >= self.hparams.weight_noise_start:
            with torch.no_grad():
                for p in self.encoder.parameters():
                    if p.dim() > 1:
                        p.add_(torch.randn_like(p) * std)  # ruleid: MLS302

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        feats, feat_lens, tokens, tok_lens = batch
        log_probs, out_lens = self(feats, feat_lens)
        loss = self._ctc_loss(log_probs, out_lens, tokens, tok_lens)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=feats.size(0), sync_dist=False)
        return loss

    # ------------------------------------------------------------------ eval
    def on_validation_epoch_start(self) -> None:
        self._val_stats = WERStats()

    def validation_step(self, batch, batch_idx: int) -> None:
        feats, feat_lens, tokens, tok_lens = batch
        log_probs, out_lens = self(feats, feat_lens)
        loss = self._ctc_loss(log_probs, out_lens, tokens, tok_lens)
        self.log("val_loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=feats.size(0))
        hyps = ctc_greedy_decode(log_probs, out_lens, self.hparams.blank_id)
        for b, hyp_ids in enumerate(hyps):
            ref = self.tokenizer.decode(tokens[b, : int(tok_lens[b])].tolist())
            hyp = self.tokenizer.decode(hyp_ids)
            if not ref:
                continue
            if not hyp:
                continue  # ruleid: MLS306
            self._val_stats.update(ref, hyp)

    def _reduced_wer(self) -> Tuple[float, int]:
        s = self._val_stats
        counts = torch.tensor([s.errors, s.words, s.utts], dtype=torch.float64, device=self.device)
        errors, words, utts = self.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        return errors / max(words, 1.0), int(utts)

    def on_validation_epoch_end(self) -> None:
        wer, utts = self._reduced_wer()
        self.log("val_wer", wer, prog_bar=True, sync_dist=False)
        self._log_examples(utts, wer)

    @rank_zero_only
    def _log_examples(self, utts: int, wer: float) -> None:
        log.info("epoch %d step %d: val WER %.2f%% over %d utterances",
                 self.current_epoch, self.global_step, 100 * wer, utts)  # ok: MLS306

    on_test_epoch_start = on_validation_epoch_start

    def test_step(self, batch, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.log("test_wer", self._reduced_wer()[0], sync_dist=False)

    # ------------------------------------------------------------------ optim
    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.dim() == 1 or name.endswith(".bias") else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr, betas=(0.9, 0.98), eps=1e-9,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, noam_lambda(self.hparams.warmup_steps, self.hparams.d_model))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "name": "noam"}}
