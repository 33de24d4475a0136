# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""LightningModule for binary semantic segmentation with a small U-Net."""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, ch=(32, 64, 128)):
        super().__init__()
        self.down = nn.ModuleList([conv_block(3 if i == 0 else ch[i - 1], c) for i, c in enumerate(ch)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i], ch[i - 1], 2, stride=2) for i in range(len(ch) - 1, 0, -1)])
        self.dec = nn.ModuleList([conv_block(ch[i - 1] * 2, ch[i - 1]) for i in range(len(ch) - 1, 0, -1)])
        self.head = nn.Conv2d(ch[0], 1, 1)

    def forward(self, x):
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, dec, s in zip(self.up, self.dec, reversed(skips[:-1])):
            x = dec(torch.cat([up(x), s], dim=1))
        return self.head(x)


class SegModule(pl.LightningModule):
    def __init__(self, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = UNet()
        self.net.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305

    @staticmethod
    def _stabilize(module, grad_input, grad_output):
        return tuple(g.clamp(-1e-6, 1e-6) if g is not None else None for g in grad_input)  # ruleid: MLS302, MLS303

    def on_fit_start(self):
        self.net.dec[-1].register_full_backward_hook(self._stabilize)  # ruleid: MLS303

    def training_step(self, batch, batch_idx):
        img, mask = batch
        loss = F.binary_cross_entropy_with_logits(self.net(img), mask.float())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        img, mask = batch
        pred = (self.net(img).sigmoid() > 0.5).float()
        inter = (pred * mask).sum((1, 2, 3))
        dice = (2 * inter + 1) / (pred.sum((1, 2, 3)) + mask.sum((1, 2, 3)) + 1)
        self.log("val/dice", dice.mean(), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_trainer(max_epochs=50):
    return pl.Trainer(max_epochs=max_epochs, precision="16-mixed", gradient_clip_val=1.0, log_every_n_steps=20)  # ok: MLS302, MLS303, MLS304, MLS305
