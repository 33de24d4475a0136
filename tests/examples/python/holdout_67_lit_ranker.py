# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""LightningModule for the DCN-v2 ranking stage.

Validation runs an impression sub-sampler that consumes the global RNG, so a
small callback keeps the training random stream independent of how often
validation is scheduled.
"""
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import BinaryAUROC


class RankerModule(pl.LightningModule):
    def __init__(self, model, lr: float = 1e-3, warmup_steps: int = 2000):
        super().__init__()
        self.model = model
        self.lr = lr
        self.warmup_steps = warmup_steps
        self.val_auc = BinaryAUROC()

    def training_step(self, batch, batch_idx):
        logits = self.model(batch["dense"], batch["sparse"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"].float())
        self.log("train/logloss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self.model(batch["dense"], batch["sparse"])
        self.val_auc.update(torch.sigmoid(logits), batch["label"].long())

    def on_validation_epoch_end(self):
        self.log("val/auc", self.val_auc.compute(), sync_dist=True)
        self.val_auc.reset()

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=1e-5)
        warm = lambda s: min(1.0, (s + 1) / self.warmup_steps)  # ok: MLS302, MLS303, MLS304, MLS305
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warm)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ValidationRNGGuard(pl.Callback):
    """Snapshot the RNG before validation and put it back afterwards."""

    def __init__(self):
        self._cpu = None
        self._cuda = None

    def on_validation_start(self, trainer, pl_module):
        if self._cpu is None:
            self._cpu = torch.get_rng_state()
            self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_validation_end(self, trainer, pl_module):
        torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301


def build_trainer(args):
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    return pl.Trainer(max_steps=args.max_steps, precision="bf16-mixed", val_check_interval=2000,
                      gradient_clip_val=1.0, callbacks=[ValidationRNGGuard()])
