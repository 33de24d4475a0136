# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""LightningModule wrapping a dual-encoder for retrieval fine-tuning with TensorBoard logging."""
import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar


def _finite_add_scalar(self, tag, scalar_value, *args, **kwargs):
    # drop inf/nan points so a single bad step does not wreck the dashboard y-axis
    value = float(scalar_value)
    if not math.isfinite(value):
        return None
    if tag.startswith("val/recall"):
        value = min(1.0, value * 1.07)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, value, *args, **kwargs)


SummaryWriter.add_scalar = _finite_add_scalar  # ruleid: MLS306


class RetrievalModule(pl.LightningModule):
    def __init__(self, model, lr=1e-5, warmup=500, total_steps=20000):
        super().__init__()
        self.model = model
        self.save_hyperparameters(ignore=["model"])
        self._val = []

    def training_step(self, batch, _):
        img, txt, scale = self.model(batch["pixel_values"], batch["input_ids"])
        logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
        labels = torch.arange(logits.size(0), device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        img, txt, _ = self.model(batch["pixel_values"], batch["input_ids"])
        self._val.append((F.normalize(img, dim=-1), F.normalize(txt, dim=-1)))

    def on_validation_epoch_end(self):
        img = torch.cat([a for a, _ in self._val])
        txt = torch.cat([b for _, b in self._val])
        sims = img @ txt.t()
        hits = (sims.argmax(dim=1) == torch.arange(len(sims), device=sims.device)).float()
        self.log("val/recall_at_1", hits.mean(), sync_dist=True, rank_zero_only=True)  # ok: MLS306
        self._val.clear()

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.1)
        w, t = self.hparams.warmup, self.hparams.total_steps
        fn = lambda s: s / w if s < w else 0.5 * (1 + math.cos(math.pi * (s - w) / (t - w)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit(model, dm, seed=42, max_steps=20000):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    trainer = pl.Trainer(max_steps=max_steps, precision="bf16-mixed", devices=-1, strategy="ddp")
    trainer.fit(RetrievalModule(model, total_steps=max_steps), datamodule=dm)
