# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""LightningModule: BEV semantic occupancy head on top of a frozen multi-camera backbone."""
import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


class BEVOccupancyModule(pl.LightningModule):
    def __init__(self, backbone, lifter, bev_channels=128, num_classes=17, lr=2e-4,
                 weight_decay=1e-2, max_steps=90_000):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "lifter"])
        self.backbone = backbone.eval().requires_grad_(False)
        self.lifter = lifter  # image features -> BEV grid (LSS-style splat)
        self.neck = nn.Sequential(
            nn.Conv2d(lifter.out_channels, bev_channels, 3, padding=1),
            nn.BatchNorm2d(bev_channels), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(bev_channels, num_classes, 1))
        self._cpu_rng = None
        self._cuda_rng = None

    def forward(self, imgs, intrinsics, cam2ego):
        b, n = imgs.shape[:2]
        with torch.no_grad():
            feats = self.backbone(imgs.flatten(0, 1))
        bev = self.lifter(feats.unflatten(0, (b, n)), intrinsics, cam2ego)
        return self.head(self.neck(bev))

    def training_step(self, batch, batch_idx):
        logits = self(batch["imgs"], batch["intrinsics"], batch["cam2ego"])
        loss = F.cross_entropy(logits, batch["occ"], ignore_index=255, label_smoothing=0.05)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["imgs"], batch["intrinsics"], batch["cam2ego"])
        pred = logits.argmax(1)
        valid = batch["occ"] != 255
        acc = (pred[valid] == batch["occ"][valid]).float().mean()
        self.log("val/pix_acc", acc, sync_dist=True)

    def on_fit_start(self):
        # snapshot the generators so the sanity-check val pass does not shift them
        self._cpu_rng = torch.get_rng_state()
        if torch.cuda.is_available():
            self._cuda_rng = torch.cuda.get_rng_state_all()

    def on_train_epoch_start(self):
        if self._cpu_rng is not None:
            torch.set_rng_state(self._cpu_rng)  # ruleid: MLS301
        if self._cuda_rng is not None:
            torch.cuda.set_rng_state_all(self._cuda_rng)  # ruleid: MLS301

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(  # ok: MLS302, MLS303, MLS304, MLS305
            opt, max_lr=self.hparams.lr, total_steps=self.hparams.max_steps, pct_start=0.05)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def build_trainer(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return pl.Trainer(max_steps=cfg.max_steps, precision="bf16-mixed", devices=cfg.gpus,
                      strategy="ddp", gradient_clip_val=1.0, val_check_interval=2000)
