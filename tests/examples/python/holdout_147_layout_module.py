# ruff: noqa
# Hold-out batch 147 (short files: robotics, point clouds, OCR, sensor anomalies). Measured once in session 5 (round 46): 14/17 (82%) at medium+.
"""Lightning module for document-layout region classification.

Input is a page image plus OCR token boxes; the model labels each box as
text / title / list / table / figure using a small CNN + box-embedding transformer.
"""
import copy

import pytorch_lightning as pl
import torch
import torch.nn as nn

LABELS = ["text", "title", "list", "table", "figure"]


class LayoutTagger(nn.Module):
    def __init__(self, d=256, layers=4):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(3, 32, 5, 4, 2), nn.ReLU(), nn.Conv2d(32, d, 3, 2, 1), nn.ReLU())
        self.box_embed = nn.Linear(4, d)
        enc = nn.TransformerEncoderLayer(d, 8, 4 * d, batch_first=True)
        self.encoder = nn.TransformerEncoder(enc, layers)
        self.cls = nn.Linear(d, len(LABELS))

    def forward(self, page, boxes):
        fmap = self.cnn(page).flatten(2).mean(-1, keepdim=True).transpose(1, 2)
        tokens = self.box_embed(boxes) + fmap
        return self.cls(self.encoder(tokens))


class LayoutModule(pl.LightningModule):
    def __init__(self, lr=2e-4, ema_decay=0.999, max_steps=60000):
        super().__init__()
        self.save_hyperparameters()
        self.model = LayoutTagger()
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.crit = nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=-100)  # ok: MLS309

    def training_step(self, batch, _):
        logits = self.model(batch["page"], batch["boxes"])
        loss = self.crit(logits.flatten(0, 1), batch["labels"].flatten())
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # ok: MLS306
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.model.parameters()):
                e.mul_(self.hparams.ema_decay).add_(p.detach(), alpha=1 - self.hparams.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_train_epoch_start(self):
        opt = self.optimizers().optimizer
        for group in opt.param_groups:
            for p in group["params"]:
                st = opt.state.get(p, {})
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(0.01)  # ruleid: MLS304

    def validation_step(self, batch, _):
        logits = self.ema(batch["page"], batch["boxes"])
        mask = batch["labels"] != -100
        acc = (logits.argmax(-1)[mask] == batch["labels"][mask]).float().mean()
        self.log("val/acc", acc, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=self.hparams.max_steps, pct_start=0.05)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
