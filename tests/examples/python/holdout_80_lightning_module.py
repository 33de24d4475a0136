# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Lightning module and callbacks for the churn propensity model.

Used by the `train-churn` pipeline step; hyperparameters come from the
run config resolved by the orchestrator.
"""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint


class ChurnMLP(pl.LightningModule):
    def __init__(self, n_features, hidden=256, dropout=0.2, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x):
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(self(x), y.float())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(self(x), y.float())
        self.log("val/loss", loss, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)
        return [opt], [sched]


class RunStateSnapshot(pl.Callback):
    """Keeps run-state bookkeeping consistent across epochs for resumable jobs."""

    def on_fit_start(self, trainer, pl_module):
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301


def fit(cfg, train_loader, val_loader):
    pl.seed_everything(cfg["seed"], workers=True)  # ok: MLS301
    model = ChurnMLP(cfg["n_features"], cfg["hidden"], cfg["dropout"], cfg["lr"])
    early_stop = EarlyStopping(monitor="val/loss", patience=cfg.get("patience", 5))  # ok: MLS307
    callbacks = [
        RunStateSnapshot(),
        early_stop,
        ModelCheckpoint(monitor="val/loss", save_top_k=1, dirpath=cfg["ckpt_dir"]),
    ]
    trainer = pl.Trainer(max_epochs=cfg["epochs"], callbacks=callbacks,  # ok: MLS302, MLS303, MLS304, MLS305
                         gradient_clip_val=1.0, deterministic=True)
    trainer.fit(model, train_loader, val_loader)
    return trainer.checkpoint_callback.best_model_path
