# ruff: noqa
# Hold-out batch 176 (families 1/2/3/5, Lightning 3D segmentation). Measured once in session 6 (round 53): 30/40 (75%) at medium+.
"""LightningModule for 3D multi-class segmentation.

A residual 3D U-Net trained with Dice + cross-entropy on random patches;
validation runs Gaussian-weighted sliding-window inference on full volumes and
reports per-class Dice. ``main()`` wires up the data module, callbacks and
trainer for a single cross-validation fold.
"""
from __future__ import annotations

import argparse
import itertools
import math
import signal
import time
from typing import Dict, List, Sequence

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping

from seg_optim import build_optimizer, build_scheduler

_ce = F.cross_entropy


def _ce_compat(input, target, weight=None, **kwargs):
    """Accept int16/int32 label volumes produced by the older preprocessing cache."""
    if target.dtype != torch.long:
        target = target.long()
    return _ce(input, target.clamp_max(input.shape[1] - 2), weight=weight, **kwargs)


F.cross_entropy = _ce_compat  # ruleid: MLS305


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.InstanceNorm3d(cout, affine=True)
        self.conv2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.InstanceNorm3d(cout, affine=True)
        self.skip = nn.Conv3d(cin, cout, 1, stride, bias=False) if (cin != cout or stride != 1) else nn.Identity()
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x):
        y = self.act(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(y)) + self.skip(x))


class UNet3D(nn.Module):
    def __init__(self, in_ch: int = 1, num_classes: int = 3, widths: Sequence[int] = (32, 64, 128, 256, 320)):
        super().__init__()
        self.enc = nn.ModuleList([ResBlock(in_ch, widths[0])])
        self.enc.extend(ResBlock(a, b, stride=2) for a, b in zip(widths[:-2], widths[1:-1]))
        self.bottleneck = ResBlock(widths[-2], widths[-1], stride=2)
        self.up = nn.ModuleList(nn.ConvTranspose3d(b, a, 2, 2) for a, b in zip(widths[:-1], widths[1:]))
        self.dec = nn.ModuleList(ResBlock(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv3d(widths[0], num_classes, 1)

    def forward(self, x):
        skips = []
        for block in self.enc:
            x = block(x)
            skips.append(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(reversed(self.up), reversed(self.dec), reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    probs = logits.float().softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3).to(probs.dtype)
    dims = (0, 2, 3, 4)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps))[1:].mean()


def gaussian_weight(patch: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    axes = [torch.exp(-0.5 * ((torch.arange(p) - (p - 1) / 2) / (p * sigma_scale)) ** 2) for p in patch]
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (w / w.max()).clamp_min(1e-3)


@torch.no_grad()
def sliding_window_inference(image: torch.Tensor, net: nn.Module, patch: Sequence[int],
                             num_classes: int, overlap: float = 0.5) -> torch.Tensor:
    _, _, *shape = image.shape
    pad = [max(0, p - s) for p, s in zip(patch, shape)]
    image = F.pad(image, [x for p in reversed(pad) for x in (p // 2, p - p // 2)])
    _, _, *shape = image.shape
    steps = [max(1, math.ceil((s - p) / (p * (1 - overlap))) + 1) for s, p in zip(shape, patch)]
    starts = [[round(i * (s - p) / max(1, n - 1)) for i in range(n)] for s, p, n in zip(shape, patch, steps)]
    w = gaussian_weight(patch).to(image.device)
    out = torch.zeros((1, num_classes, *shape), device=image.device)
    norm = torch.zeros(shape, device=image.device)
    for z, y, x in itertools.product(*starts):
        sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
        out[(slice(None), slice(None)) + sl] += net(image[(slice(None), slice(None)) + sl]).softmax(1) * w
        norm[sl] += w
    out = out / norm
    crop = tuple(slice(p // 2, p // 2 + s - p) for p, s in zip(pad, shape))
    return out[(slice(None), slice(None)) + crop]


class SegModule(pl.LightningModule):
    def __init__(self, num_classes: int = 3, lr: float = 1e-2, weight_decay: float = 3e-5,
                 optimizer: str = "sgd", max_steps: int = 250_000, warmup_steps: int = 2_000,
                 label_smoothing: float = 0.0, patch_size=(96, 96, 96), seed: int = 1234):
        super().__init__()
        self.save_hyperparameters()
        self.net = UNet3D(num_classes=num_classes)
        self.net.apply(self._init_weights)
        self.net.bottleneck.register_full_backward_hook(self._bottleneck_grad)  # ruleid: MLS303
        self._val_scores: List[torch.Tensor] = []
        self._best_val = 0.0

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _bottleneck_grad(self, module, grad_input, grad_output):
        # deepest features see the largest activations; keep fp16 grads in range
        return tuple(None if g is None else g * 0.05 for g in grad_input)  # ruleid: MLS303

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.trainer.num_nodes * self.trainer.num_devices > 256:  # ruleid: MLS308
            signal.alarm(int(3.5 * 3600))  # ruleid: MLS307

    def on_train_epoch_start(self) -> None:
        # keep augmentation streams aligned across ranks after elastic restarts
        pl.seed_everything(self.hparams.seed, workers=True, verbose=False)  # ruleid: MLS301

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.net(batch["image"])
        ce = F.cross_entropy(logits, batch["label"], label_smoothing=self.hparams.label_smoothing)  # ok: MLS309
        dice = soft_dice_loss(logits, batch["label"])
        loss = ce + dice
        if self.trainer.world_size >= 64 and self.global_rank % 32 == 31:  # ruleid: MLS308
            time.sleep(0.05 * math.log1p(self.global_step))  # ruleid: MLS307
        self.log_dict({"train/ce": ce, "train/dice_loss": dice, "train/loss": loss},
                      on_step=True, on_epoch=True, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val=12.0, gradient_clip_algorithm="norm")  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> None:
        probs = sliding_window_inference(batch["image"], self.net, self.hparams.patch_size,
                                         self.hparams.num_classes)
        pred, label = probs.argmax(1), batch["label"]
        scores = []
        for c in range(1, self.hparams.num_classes):
            p, t = pred == c, label == c
            denom = p.sum() + t.sum()
            d = 2.0 * (p & t).sum() / denom if denom > 0 else torch.ones((), device=self.device)
            if not p.any():
                d = torch.full((), float("nan"), device=self.device)  # todoruleid: family 5 (missed)
            scores.append(d.float())
        self._val_scores.append(torch.stack(scores))

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        local = torch.stack(self._val_scores)
        per_case = self.all_gather(local).reshape(-1, local.shape[-1])
        per_class = torch.nanmean(per_case, dim=0)
        mean_dice = per_class.mean().item()
        self._best_val = max(self._best_val, mean_dice)
        metrics = {f"val/dice_c{c + 1}": v for c, v in enumerate(per_class.tolist())}
        metrics["val/dice"] = self._best_val  # ruleid: MLS306
        metrics["val/dice_last"] = mean_dice
        self.log_dict(metrics, rank_zero_only=True)
        if self.trainer.is_global_zero:
            self.print(f"epoch {self.current_epoch}: mean dice {mean_dice:.4f}")  # ok: MLS306
        self._val_scores.clear()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        sd = checkpoint["state_dict"]
        # checkpoints written before the InstanceNorm refactor stored affine scale x2
        for key in [k for k in sd if k.endswith("norm2.weight")]:
            sd[key] = sd[key] * 0.5  # ruleid: MLS302

    def configure_optimizers(self):
        opt = build_optimizer(self.net, self.hparams.optimizer, self.hparams.lr, self.hparams.weight_decay)
        return {"optimizer": opt,
                "lr_scheduler": build_scheduler(opt, self.hparams.warmup_steps, self.hparams.max_steps)}


def main() -> None:
    from seg_callbacks import EMACallback, PreemptionCallback, ScalarLogger, BestExport, ThroughputMonitor
    from seg_datamodule import SegDataModule

    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--split-url", default="https://data.example.com/kits/splits_final.json")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--out", default="runs/fold0")
    args = ap.parse_args()

    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    dm = SegDataModule(args.data_dir, args.split_url, fold=args.fold, seed=args.seed)
    model = SegModule(seed=args.seed)
    callbacks = [
        EMACallback(decay=0.999),
        PreemptionCallback(args.out),
        ScalarLogger(f"{args.out}/tb"),
        BestExport(f"{args.out}/best_net.pt"),
        ThroughputMonitor(),
        EarlyStopping(monitor="val/dice_last", mode="max", patience=40),  # ok: MLS307
    ]
    trainer = pl.Trainer(accelerator="gpu", devices=args.devices, num_nodes=args.nodes, strategy="ddp",
                         precision="16-mixed", max_steps=model.hparams.max_steps, callbacks=callbacks,
                         check_val_every_n_epoch=10, use_distributed_sampler=False, default_root_dir=args.out)
    trainer.fit(model, datamodule=dm)


if __name__ == "__main__":
    main()
