# ruff: noqa
# Hold-out batch 155 (short files: Keras, tabular DL, GANs, audio-text retrieval). Measured once in session 5 (round 48): 12/18 (67%) at medium+.
"""LightningModule for contrastive audio-text pretraining (CLAP-style).

Symmetric InfoNCE over gathered embeddings with a learnable temperature;
a retrieval index is rebuilt from rank-local shards after each validation.
"""
import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F


class CLAPModule(pl.LightningModule):
    def __init__(self, audio_encoder, text_encoder, dim=512, lr=1e-4, warmup=2000):
        super().__init__()
        self.audio, self.text = audio_encoder, text_encoder
        self.a_proj = torch.nn.Linear(audio_encoder.out_dim, dim)
        self.t_proj = torch.nn.Linear(text_encoder.out_dim, dim)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.lr, self.warmup = lr, warmup
        self._val_shards = []

    def embed(self, wav, tokens):
        a = F.normalize(self.a_proj(self.audio(wav)), dim=-1)
        t = F.normalize(self.t_proj(self.text(**tokens)), dim=-1)
        return a, t

    def training_step(self, batch, batch_idx):
        a, t = self.embed(batch["wav"], batch["tokens"])
        a = self.all_gather(a, sync_grads=True).flatten(0, 1)
        t = self.all_gather(t, sync_grads=True).flatten(0, 1)
        logits = self.logit_scale.exp() * a @ t.T
        target = torch.arange(a.size(0), device=a.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        with torch.no_grad():
            self.logit_scale.clamp_(0, math.log(100))  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        a, t = self.embed(batch["wav"], batch["tokens"])
        self._val_shards.append((a.cpu(), t.cpu()))

    def on_validation_epoch_end(self):
        a = torch.cat([x[0] for x in self._val_shards])
        torch.save(a, f"val_audio_rank{self.global_rank}.pt")
        self._val_shards.clear()
        if self.trainer.world_size > 1 and self.global_rank != self.trainer.world_size - 1:
            torch.distributed.barrier()  # ruleid: MLS307

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / self.warmup))  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
