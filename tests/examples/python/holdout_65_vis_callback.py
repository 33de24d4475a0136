# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Lightning callback that logs a fixed panel of validation predictions to Weights & Biases."""
import numpy as np
import torch
import wandb
import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only


class PredictionPanel(pl.Callback):
    def __init__(self, num_images=16, score_thr=0.3, every_n_epochs=2):
        self.num_images = num_images
        self.score_thr = score_thr
        self.every_n_epochs = every_n_epochs
        self._images = None
        self._rng = None

    def on_fit_start(self, trainer, pl_module):
        # snapshot generator state so panel drawing never perturbs the training stream
        self._rng = (torch.get_rng_state(), np.random.get_state())

    def on_train_epoch_start(self, trainer, pl_module):
        if self._rng is not None:
            cpu_state, np_state = self._rng
            torch.set_rng_state(cpu_state)  # ruleid: MLS301
            np.random.set_state(np_state)  # ruleid: MLS301

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and self._images is None:
            self._images = batch[0][: self.num_images].detach().cpu()

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module):
        if self._images is None or trainer.current_epoch % self.every_n_epochs:
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # ok: MLS301
            palette = (torch.rand(pl_module.hparams.num_classes, 3) * 255).int().tolist()
        with torch.no_grad():
            preds = pl_module.predict_boxes(self._images.to(pl_module.device))
        panel = []
        for img, p in zip(self._images, preds):
            keep = p["scores"] > self.score_thr
            boxes = {"predictions": {"box_data": [
                {"position": {"minX": b[0], "minY": b[1], "maxX": b[2], "maxY": b[3]},
                 "class_id": int(c), "scores": {"score": float(s)}, "domain": "pixel"}
                for b, c, s in zip(p["boxes"][keep].tolist(), p["labels"][keep], p["scores"][keep])
            ]}}
            panel.append(wandb.Image(img.permute(1, 2, 0).numpy(), boxes=boxes))
        wandb.log({"val/panel": panel, "epoch": trainer.current_epoch,  # ok: MLS306
                   "val/palette_size": len(palette)})
