# ruff: noqa
# Benign look-alike: a Lightning-style module, data module and callbacks (written for
# mlscan's tests). Must produce no finding at medium or above.
import copy
import os
import random

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset, random_split

L.seed_everything(42, workers=True)


class TokenDataset(Dataset):
    def __init__(self, path, block_size, augment=False):
        self.data = np.memmap(path, dtype=np.uint16, mode="r")
        self.block_size = block_size
        self.augment = augment

    def __len__(self):
        return len(self.data) // self.block_size - 1

    def __getitem__(self, idx):
        start = idx * self.block_size
        chunk = torch.from_numpy(self.data[start:start + self.block_size + 1].astype(np.int64))
        x, y = chunk[:-1], chunk[1:]
        if self.augment and random.random() < 0.1:
            x = x.clone()
            mask = torch.rand(x.shape) < 0.15
            x[mask] = 0
        return x, y


class TinyLM(L.LightningModule):
    def __init__(self, vocab=50304, dim=256, lr=3e-4, warmup=500):
        super().__init__()
        self.save_hyperparameters()
        self.emb = nn.Embedding(vocab, dim)
        self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(dim, 4, batch_first=True) for _ in range(4)])
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, x):
        return self.head(self.blocks(self.emb(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        val_loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        val_acc = (logits.argmax(-1) == y).float().mean()
        self.log("val_loss", val_loss, sync_dist=True)
        self.log("val_acc", val_acc * 100, sync_dist=True)
        self.log("val_ppl", torch.exp(val_loss), sync_dist=True)

    def configure_optimizers(self):
        decay = [p for n, p in self.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.named_parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=self.hparams.lr, betas=(0.9, 0.95))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / self.hparams.warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_before_optimizer_step(self, optimizer):
        norms = [p.grad.norm() for p in self.parameters() if p.grad is not None]
        if norms:
            self.log("grad_norm", torch.stack(norms).norm())


class EMACallback(Callback):
    def __init__(self, decay=0.999):
        self.decay = decay
        self.ema_model = None

    def on_fit_start(self, trainer, pl_module):
        self.ema_model = copy.deepcopy(pl_module).eval()
        for p in self.ema_model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for ema_p, p in zip(self.ema_model.parameters(), pl_module.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    def on_validation_epoch_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        if "val_loss" in metrics:
            pl_module.print(f"val_loss={metrics['val_loss']:.4f}")


class DataModule(L.LightningDataModule):
    def __init__(self, root, block_size=256, batch_size=32, workers=4):
        super().__init__()
        self.root, self.block_size, self.batch_size, self.workers = root, block_size, batch_size, workers

    def setup(self, stage=None):
        full = TokenDataset(os.path.join(self.root, "train.bin"), self.block_size, augment=True)
        n_val = max(1, len(full) // 100)
        self.train_set, self.val_set = random_split(full, [len(full) - n_val, n_val],
                                                    generator=torch.Generator().manual_seed(0))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          num_workers=self.workers, persistent_workers=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.workers)


def main():
    dm = DataModule("data/shakespeare")
    model = TinyLM()
    trainer = L.Trainer(max_steps=5000, precision="bf16-mixed", gradient_clip_val=1.0,
                        callbacks=[EMACallback(), LearningRateMonitor("step"),
                                   ModelCheckpoint(monitor="val_loss", save_top_k=1)],
                        strategy="ddp" if torch.cuda.device_count() > 1 else "auto")
    trainer.fit(model, dm)
    if trainer.is_global_zero:
        best = trainer.checkpoint_callback.best_model_path
        model = TinyLM.load_from_checkpoint(best)
        torch.save(model.state_dict(), "final.pt")


if __name__ == "__main__":
    main()
