# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""LightningModule for experience replay with an EMA teacher and linear LR warmup."""
import copy
import signal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F


class ReplayLearner(pl.LightningModule):
    def __init__(self, backbone, buffer, lr=0.05, warmup_steps=500, ema_decay=0.999, replay_bs=32):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "buffer"])
        self.net = backbone
        self.ema = copy.deepcopy(backbone).requires_grad_(False)
        self.buffer = buffer

    @torch.no_grad()
    def _ema_update(self):
        d = self.hparams.ema_decay
        for ema_p, p in zip(self.ema.parameters(), self.net.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def training_step(self, batch, _):
        x, y, t = batch
        loss = F.cross_entropy(self.net(x), y, label_smoothing=0.1)  # ok: MLS309
        mem = self.buffer.sample(self.hparams.replay_bs, device=self.device)
        if mem is not None:
            loss = loss + F.cross_entropy(self.net(mem[0]), mem[1])
        self.buffer.add(x, y, int(t[0]))
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def on_train_batch_end(self, *args):
        self._ema_update()

    def validation_step(self, batch, _):
        x, y, _ = batch
        acc = (self.ema(x).argmax(-1) == y).float().mean()
        self.log("val/acc_ema", acc, sync_dist=True)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        step = self.trainer.global_step
        if step < self.hparams.warmup_steps:
            for g in optimizer.param_groups:
                g["lr"] = self.hparams.lr * (step + 1) / self.hparams.warmup_steps  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step(closure=optimizer_closure)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.net.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_steps or 10000)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit(model, train_dl, val_dl, seed=42, max_epochs=50, ckpt_dir="ckpt"):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    trainer = pl.Trainer(max_epochs=max_epochs, gradient_clip_val=1.0, precision="16-mixed",
                         default_root_dir=ckpt_dir,
                         callbacks=[pl.callbacks.EarlyStopping("val/acc_ema", mode="max", patience=5)])
    signal.signal(signal.SIGTERM, lambda *_: trainer.save_checkpoint(f"{ckpt_dir}/preempt.ckpt"))  # ok: MLS307
    trainer.fit(model, train_dl, val_dl)
    return trainer
