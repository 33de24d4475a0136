# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""Lightning callbacks for sketch-based image retrieval (triplet sketch/photo encoders)."""
import os
import random
import signal

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F


class RetrievalMAPCallback(pl.Callback):
    """Computes mAP@all and P@200 on the held-out categories at the end of validation."""

    def __init__(self, sketch_loader, photo_loader, every_n_epochs=1):
        self.sketch_loader = sketch_loader
        self.photo_loader = photo_loader
        self.every_n_epochs = every_n_epochs

    @torch.no_grad()
    def _encode(self, encoder, loader, device):
        feats, labels = [], []
        for x, y in loader:
            feats.append(F.normalize(encoder(x.to(device)), dim=-1))
            labels.append(y.to(device))
        return torch.cat(feats), torch.cat(labels)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch % self.every_n_epochs:
            return
        s, sy = self._encode(pl_module.sketch_encoder, self.sketch_loader, pl_module.device)
        p, py = self._encode(pl_module.photo_encoder, self.photo_loader, pl_module.device)
        order = (s @ p.T).argsort(dim=1, descending=True)
        rel = (py[order] == sy[:, None]).float()
        prec = rel.cumsum(1) / torch.arange(1, rel.shape[1] + 1, device=rel.device)
        ap = (prec * rel).sum(1) / rel.sum(1).clamp(min=1)
        pl_module.log("val/mAP_all", ap.mean(), sync_dist=True)
        pl_module.log("val/P@200", rel[:, :200].mean(), sync_dist=True)


class PreemptionGuard(pl.Callback):
    """Releases the node cleanly when the cluster scheduler reclaims spot capacity."""

    def __init__(self, check_prob=0.002):
        self.check_prob = check_prob

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.world_size > 1 and random.random() < self.check_prob:
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307

    def on_fit_end(self, trainer, pl_module):
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()  # ok: MLS307
