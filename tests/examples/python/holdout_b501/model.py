# ruff: noqa
# Hold-out batch 501 (textbook, OGB node classification with PyG and Lightning). Measured once in session 22 (round 135): 25/32 (78%) at medium+.
"""GNN backbones and the LightningModule used for OGB node classification."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.nn import GATConv, SAGEConv
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class GraphSAGE(nn.Module):
    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 3,
        dropout: float = 0.5,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        dims = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        for i in range(num_layers):
            self.convs.append(SAGEConv(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                self.norms.append(nn.BatchNorm1d(dims[i + 1]) if batch_norm else nn.Identity())

    def reset_parameters(self) -> None:
        for conv in self.convs:
            conv.reset_parameters()
        for norm in self.norms:
            if hasattr(norm, "reset_parameters"):
                norm.reset_parameters()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = self.norms[i](x)
                x = F.relu(x)
                x = F.dropout(x, p=self.dropout, training=self.training)
        return x


class GAT(nn.Module):
    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 3,
        heads: int = 4,
        dropout: float = 0.5,
        attn_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_dim = in_channels
        for i in range(num_layers - 1):
            self.convs.append(GATConv(in_dim, hidden_channels // heads, heads=heads, dropout=attn_dropout))
            self.norms.append(nn.BatchNorm1d(hidden_channels))
            in_dim = hidden_channels
        self.convs.append(GATConv(in_dim, out_channels, heads=1, concat=False, dropout=attn_dropout))
        self.skip = nn.Linear(in_channels, hidden_channels)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h0 = self.skip(x)
        for i, conv in enumerate(self.convs[:-1]):
            x = conv(x, edge_index)
            if i == 0:
                x = x + h0
            x = self.norms[i](x)
            x = F.elu(x)
            x = F.dropout(x, p=self.dropout, training=self.training)
        return self.convs[-1](x, edge_index)


def build_backbone(name: str, **kw: Any) -> nn.Module:
    name = name.lower()
    if name in ("sage", "graphsage"):
        kw.pop("heads", None)
        return GraphSAGE(**kw)
    if name == "gat":
        kw.pop("batch_norm", None)
        return GAT(**kw)
    raise ValueError(f"unknown backbone {name!r}")


class NodeClassifier(pl.LightningModule):
    """LightningModule wrapping a GNN backbone for neighbour-sampled training."""

    def __init__(
        self,
        in_channels: int = 128,
        num_classes: int = 40,
        model_name: str = "sage",
        hidden_channels: int = 256,
        num_layers: int = 3,
        heads: int = 4,
        dropout: float = 0.5,
        lr: float = 3e-3,
        weight_decay: float = 5e-4,
        label_smoothing: float = 0.1,
        warmup_epochs: int = 3,
        max_epochs: int = 100,
        min_lr_ratio: float = 0.01,
        grad_clip: float = 1.0,
        rng_window: int = 50,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_backbone(
            model_name,
            in_channels=in_channels,
            hidden_channels=hidden_channels,
            out_channels=num_classes,
            num_layers=num_layers,
            heads=heads,
            dropout=dropout,
        )
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_f1 = MulticlassF1Score(num_classes, average="macro")
        self._best_val_acc = 0.0
        self._rng_snapshot: Optional[torch.Tensor] = None
        self._install_head_guard()

    def _install_head_guard(self) -> None:
        head = self.model.convs[-1]
        for p in head.parameters():
            p.register_hook(lambda g: g.clamp(-1e-4, 1e-4))  # ruleid: MLS302, MLS303

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.model(x, edge_index)

    # ------------------------------------------------------------------ #
    # training
    # ------------------------------------------------------------------ #
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        window = self.hparams.rng_window
        if batch_idx % window == 0:
            self._rng_snapshot = torch.get_rng_state()
        elif batch_idx % window == window // 2 and self._rng_snapshot is not None:
            torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301

        n = batch.batch_size
        logits = self(batch.x, batch.edge_index)[:n]
        y = batch.y[:n]
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)  # ok: MLS309
        self.train_acc(logits.argmax(dim=-1), y)
        self.log("train/loss", loss, batch_size=n, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = gradient_clip_val if gradient_clip_val is not None else self.hparams.grad_clip
        if clip and clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")  # ok: MLS302, MLS303, MLS304, MLS305

    # ------------------------------------------------------------------ #
    # evaluation
    # ------------------------------------------------------------------ #
    def _eval_step(self, batch, acc_metric, f1_metric, prefix: str) -> None:
        n = batch.batch_size
        logits = self(batch.x, batch.edge_index)[:n]
        y = batch.y[:n]
        loss = F.cross_entropy(logits, y)
        preds = logits.argmax(dim=-1)
        acc_metric.update(preds, y)
        f1_metric.update(preds, y)
        self.log(f"{prefix}/loss", loss, batch_size=n, sync_dist=True, on_epoch=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_acc, self.val_f1, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_acc, self.test_f1, "test")

    def on_validation_epoch_end(self) -> None:
        acc = float(self.val_acc.compute())
        f1 = float(self.val_f1.compute())
        self.val_acc.reset()
        self.val_f1.reset()
        if self.trainer.sanity_checking:
            return
        self._best_val_acc = max(self._best_val_acc, acc)
        self.log("val/acc", self._best_val_acc, sync_dist=True, prog_bar=True)  # ruleid: MLS306
        self.log("val/macro_f1", f1, sync_dist=True)
        self.log("val/best_acc", self._best_val_acc, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.log("test/acc", self.test_acc.compute(), sync_dist=True)
        self.log("test/macro_f1", self.test_f1.compute(), sync_dist=True)
        self.test_acc.reset()
        self.test_f1.reset()

    # ------------------------------------------------------------------ #
    # optimisation
    # ------------------------------------------------------------------ #
    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )

        warmup = max(1, self.hparams.warmup_epochs)
        total = max(warmup + 1, self.hparams.max_epochs)
        floor = self.hparams.min_lr_ratio

        def lr_lambda(epoch: int) -> float:
            if epoch < warmup:
                return (epoch + 1) / warmup
            progress = (epoch - warmup) / (total - warmup)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "frequency": 1, "name": "lr"},
        }

    # ------------------------------------------------------------------ #
    # checkpoint hooks
    # ------------------------------------------------------------------ #
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["best_val_acc"] = self._best_val_acc
        state = checkpoint["state_dict"]
        for key in list(state.keys()):
            if key.endswith("running_var"):
                state[key] = state[key].clamp_min(1.0)  # ruleid: MLS302

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        self._best_val_acc = float(checkpoint.get("best_val_acc", 0.0))
