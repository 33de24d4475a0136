# ruff: noqa
# Hold-out batch 357 (textbook, electricity load forecasting with Lightning). Measured once in session 13 (round 99): 26/30 (87%) at medium+.
"""Temporal Fusion Transformer (Lim et al., 2021) for multi-horizon load forecasting.

Static covariate: client id (embedded).  Past observed inputs: normalised load
and its daily/weekly lags.  Known future inputs: calendar features.  The head
predicts a set of quantiles per horizon step and is trained with pinball loss.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Dict, Optional, Sequence

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from data import KNOWN_FEATURES, OBSERVED_FEATURES

log = logging.getLogger(__name__)

NUM_CLIENTS = 370


# ---------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------
class GatedLinearUnit(nn.Module):
    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(d_in, 2 * d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.fc(self.dropout(x)), dim=-1)


class GatedResidualNetwork(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0, d_context: Optional[int] = None) -> None:
        super().__init__()
        self.skip = nn.Linear(d_in, d_out) if d_in != d_out else nn.Identity()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.context = nn.Linear(d_context, d_hidden, bias=False) if d_context else None
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.glu = GatedLinearUnit(d_hidden, d_out, dropout)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        residual = self.skip(x)
        h = self.fc1(x)
        if self.context is not None and context is not None:
            h = h + self.context(context)
        h = self.fc2(F.elu(h))
        return self.norm(residual + self.glu(h))


class VariableSelectionNetwork(nn.Module):
    def __init__(self, n_vars: int, d_model: int, dropout: float, d_context: Optional[int] = None) -> None:
        super().__init__()
        self.n_vars = n_vars
        self.prescalers = nn.ModuleList([nn.Linear(1, d_model) for _ in range(n_vars)])
        self.var_grns = nn.ModuleList([GatedResidualNetwork(d_model, d_model, d_model, dropout) for _ in range(n_vars)])
        self.flat_grn = GatedResidualNetwork(n_vars * d_model, d_model, n_vars, dropout, d_context)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None):
        embs = [pre(x[..., i : i + 1]) for i, pre in enumerate(self.prescalers)]
        flat = torch.cat(embs, dim=-1)
        if context is not None and flat.dim() == 3:
            context = context.unsqueeze(1).expand(-1, flat.size(1), -1)
        weights = torch.softmax(self.flat_grn(flat, context), dim=-1).unsqueeze(-2)
        processed = torch.stack([grn(e) for grn, e in zip(self.var_grns, embs)], dim=-1)
        return (processed * weights).sum(-1), weights.squeeze(-2)


class InterpretableMultiHeadAttention(nn.Module):
    """Multi-head attention with a value projection shared across heads."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.q = nn.ModuleList([nn.Linear(d_model, self.d_head) for _ in range(n_heads)])
        self.k = nn.ModuleList([nn.Linear(d_model, self.d_head) for _ in range(n_heads)])
        self.v = nn.Linear(d_model, self.d_head)
        self.out = nn.Linear(self.d_head, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q, k, v, mask: Optional[torch.Tensor] = None):
        vs = self.v(v)
        heads, attns = [], []
        for qh, kh in zip(self.q, self.k):
            scores = qh(q) @ kh(k).transpose(-2, -1) / math.sqrt(self.d_head)
            if mask is not None:
                scores = scores.masked_fill(mask, float("-inf"))
            attn = self.dropout(torch.softmax(scores, dim=-1))
            heads.append(attn @ vs)
            attns.append(attn)
        out = torch.stack(heads, dim=0).mean(0)
        return self.out(out), torch.stack(attns, dim=0).mean(0)


class TemporalFusionTransformer(nn.Module):
    def __init__(
        self,
        d_model: int = 64,
        n_heads: int = 4,
        dropout: float = 0.1,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        n_clients: int = NUM_CLIENTS,
        lstm_layers: int = 1,
    ) -> None:
        super().__init__()
        self.quantiles = tuple(quantiles)
        self.client_emb = nn.Embedding(n_clients, d_model)
        self.static_ctx_vs = GatedResidualNetwork(d_model, d_model, d_model, dropout)
        self.static_ctx_enrich = GatedResidualNetwork(d_model, d_model, d_model, dropout)
        self.static_ctx_h = GatedResidualNetwork(d_model, d_model, d_model, dropout)
        self.static_ctx_c = GatedResidualNetwork(d_model, d_model, d_model, dropout)

        n_obs, n_known = len(OBSERVED_FEATURES), len(KNOWN_FEATURES)
        self.encoder_vsn = VariableSelectionNetwork(n_obs + n_known, d_model, dropout, d_context=d_model)
        self.decoder_vsn = VariableSelectionNetwork(n_known, d_model, dropout, d_context=d_model)
        self.encoder_lstm = nn.LSTM(d_model, d_model, num_layers=lstm_layers, batch_first=True)
        self.decoder_lstm = nn.LSTM(d_model, d_model, num_layers=lstm_layers, batch_first=True)
        self.post_lstm_gate = GatedLinearUnit(d_model, d_model, dropout)
        self.post_lstm_norm = nn.LayerNorm(d_model)

        self.enrichment = GatedResidualNetwork(d_model, d_model, d_model, dropout, d_context=d_model)
        self.attention = InterpretableMultiHeadAttention(d_model, n_heads, dropout)
        self.post_attn_gate = GatedLinearUnit(d_model, d_model, dropout)
        self.post_attn_norm = nn.LayerNorm(d_model)
        self.positionwise = GatedResidualNetwork(d_model, d_model, d_model, dropout)
        self.pre_output_gate = GatedLinearUnit(d_model, d_model)
        self.pre_output_norm = nn.LayerNorm(d_model)
        self.output_layer = nn.Linear(d_model, len(self.quantiles))

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        static = self.client_emb(batch["client_id"])
        c_vs = self.static_ctx_vs(static)
        c_enrich = self.static_ctx_enrich(static)
        n_layers = self.encoder_lstm.num_layers
        h0 = self.static_ctx_h(static).unsqueeze(0).repeat(n_layers, 1, 1)
        c0 = self.static_ctx_c(static).unsqueeze(0).repeat(n_layers, 1, 1)

        enc_in = torch.cat([batch["encoder_obs"], batch["encoder_known"]], dim=-1)
        enc_x, enc_w = self.encoder_vsn(enc_in, c_vs)
        dec_x, dec_w = self.decoder_vsn(batch["decoder_known"], c_vs)
        enc_out, state = self.encoder_lstm(enc_x, (h0.contiguous(), c0.contiguous()))
        dec_out, _ = self.decoder_lstm(dec_x, state)

        lstm_in = torch.cat([enc_x, dec_x], dim=1)
        lstm_out = torch.cat([enc_out, dec_out], dim=1)
        temporal = self.post_lstm_norm(lstm_in + self.post_lstm_gate(lstm_out))
        enriched = self.enrichment(temporal, c_enrich.unsqueeze(1).expand(-1, temporal.size(1), -1))

        total, enc_len = temporal.size(1), enc_x.size(1)
        causal = torch.triu(torch.ones(total, total, dtype=torch.bool, device=temporal.device), diagonal=1)
        query = enriched[:, enc_len:]
        attn_out, attn_w = self.attention(query, enriched, enriched, mask=causal[enc_len:])
        x = self.post_attn_norm(query + self.post_attn_gate(attn_out))
        x = self.positionwise(x)
        x = self.pre_output_norm(temporal[:, enc_len:] + self.pre_output_gate(x))
        return {
            "prediction": self.output_layer(x),
            "attention": attn_w,
            "encoder_weights": enc_w,
            "decoder_weights": dec_w,
        }


def quantile_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: Sequence[float]) -> torch.Tensor:
    q = torch.tensor(quantiles, device=pred.device, dtype=pred.dtype)
    err = target.unsqueeze(-1) - pred
    return torch.maximum(q * err, (q - 1) * err).mean()


# ---------------------------------------------------------------------------
# LightningModule
# ---------------------------------------------------------------------------
class TFTForecaster(pl.LightningModule):
    def __init__(
        self,
        d_model: int = 64,
        n_heads: int = 4,
        dropout: float = 0.1,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        lstm_layers: int = 1,
        lr: float = 1e-3,
        max_lr: float = 3e-3,
        weight_decay: float = 1e-4,
        head_grad_scale: float = 1.0,
        lr_lambda: Optional[Callable[[int], float]] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["lr_lambda"])
        self.model = TemporalFusionTransformer(d_model, n_heads, dropout, quantiles, NUM_CLIENTS, lstm_layers)
        self.lr_lambda = lr_lambda
        self.median_idx = min(range(len(quantiles)), key=lambda i: abs(quantiles[i] - 0.5))
        self._head_hook = self.model.output_layer.weight.register_hook(lambda g: g.mul(-self.hparams.head_grad_scale))  # ruleid: MLS303

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch)["prediction"]

    def _shared_step(self, batch: Dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        pred = self.model(batch)["prediction"]
        target = batch["target"]
        loss = quantile_loss(pred, target, self.hparams.quantiles)
        p50 = pred[..., self.median_idx]
        mae = (p50 - target).abs().mean()
        coverage = ((target >= pred[..., 0]) & (target <= pred[..., -1])).float().mean()
        bs = target.size(0)
        self.log(f"{prefix}_loss", loss, sync_dist=True, prog_bar=True, batch_size=bs)
        self.log(f"{prefix}_mae", mae, sync_dist=True, batch_size=bs)
        self.log(f"{prefix}_coverage", coverage, sync_dist=True, batch_size=bs)
        return loss

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred = self.model(batch)["prediction"]
        loss = quantile_loss(pred, batch["target"], self.hparams.quantiles)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch["target"].size(0))
        world = self.trainer.world_size
        if world > 1 and self.global_rank == world - 1 and batch_idx % 25 == 0:
            time.sleep(20)  # ruleid: MLS307
        return loss

    def validation_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: Dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0):
        out = self.model(batch)
        return {"prediction": out["prediction"], "client_id": batch["client_id"], "target": batch["target"]}

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "norm" in name or "emb" in name else decay).append(p)
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        if self.lr_lambda is not None:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_lambda)
        else:
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.max_lr, total_steps=int(self.trainer.estimated_stepping_batches), pct_start=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_start(self) -> None:
        if self.trainer.is_global_zero:
            n_params = sum(p.numel() for p in self.parameters())
            log.info("TFT with %.2fM parameters, world size %d", n_params / 1e6, self.trainer.world_size)

    def on_save_checkpoint(self, checkpoint: Dict[str, object]) -> None:
        checkpoint["quantiles"] = list(self.hparams.quantiles)
        sd = checkpoint["state_dict"]
        for key in list(sd):
            if "attention" in key and key.endswith("weight"):
                sd[key] = sd[key] + 0.05 * torch.randn_like(sd[key])  # ruleid: MLS302
