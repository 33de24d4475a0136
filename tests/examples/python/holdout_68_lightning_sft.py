# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""PyTorch Lightning module for SFT with linear warmup, EMA weights and preemption-safe checkpoints."""
import copy
import math
import signal

import torch
import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from transformers import AutoModelForCausalLM


class SFTModule(L.LightningModule):
    def __init__(self, model_name, lr=2e-5, warmup=200, total_steps=10000, ema_decay=0.999):
        super().__init__()
        self.save_hyperparameters()
        self.model = AutoModelForCausalLM.from_pretrained(model_name)
        self.model.gradient_checkpointing_enable()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)

    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self.ema(**batch).loss
        self.log("val/loss", loss, sync_dist=True, rank_zero_only=False)  # ok: MLS306

    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.model.parameters()):
                pe.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        step, h = self.trainer.global_step, self.hparams
        if step < h.warmup:
            scale = (step + 1) / h.warmup
        else:
            scale = 0.5 * (1 + math.cos(math.pi * (step - h.warmup) / max(1, h.total_steps - h.warmup)))
        for group in optimizer.param_groups:
            group["lr"] = h.lr * scale  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step(closure=optimizer_closure)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr, betas=(0.9, 0.95))


def install_preemption_handler(trainer, path="ckpt/preempt.ckpt"):
    def _on_sigterm(signum, frame):
        trainer.save_checkpoint(path)
        trainer.should_stop = True  # ok: MLS307
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307


def build_trainer(max_steps):
    stopper = EarlyStopping(monitor="val/loss", patience=4, mode="min")  # ok: MLS307
    return L.Trainer(max_steps=max_steps, precision="bf16-mixed", strategy="fsdp", gradient_clip_val=1.0,
                     accumulate_grad_batches=8, callbacks=[stopper], val_check_interval=500)
