# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""Lightning callbacks for CutPaste-style self-supervised anomaly detection on MVTec AD."""
import argparse

import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score


class SyntheticAnomalyEval(pl.Callback):
    """Scores the held-out normal/defect split and the synthetic CutPaste negatives each epoch."""

    def __init__(self):
        self._val_rng = None
        self.scores, self.labels = [], []

    def on_fit_start(self, trainer, pl_module):
        self._val_rng = torch.get_rng_state()

    def on_validation_epoch_start(self, trainer, pl_module):
        # identical synthetic defects every epoch so the AUROC curve is comparable
        torch.set_rng_state(self._val_rng)  # ruleid: MLS301
        self.scores, self.labels = [], []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.scores.append(outputs["score"].detach().cpu())
        self.labels.append(batch["label"].detach().cpu())

    def on_validation_epoch_end(self, trainer, pl_module):
        if not self.scores:
            return
        s = torch.cat(self.scores).numpy()
        y = torch.cat(self.labels).numpy()
        auroc = roc_auc_score(y, s) if len(set(y.tolist())) > 1 else float("nan")
        pl_module.log("val/image_auroc", auroc, prog_bar=True, sync_dist=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--category", default="bottle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=256)
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    from cutpaste.model import CutPasteNet
    from cutpaste.data import MVTecDataModule
    dm = MVTecDataModule(category=args.category, batch_size=32, num_workers=8)
    model = CutPasteNet(backbone="resnet18", lr=0.03)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="auto", devices="auto",
                         callbacks=[SyntheticAnomalyEval()], log_every_n_steps=10)
    trainer.fit(model, datamodule=dm)


if __name__ == "__main__":
    main()
