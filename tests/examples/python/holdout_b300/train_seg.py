# ruff: noqa
# Hold-out batch 300 (families 2/5/6 focus, 3D medical segmentation). Measured once in session 10 (round 84): 23/41 (56%) at medium+.
"""Training entry point for the 3D U-Net (Dice + CE deep supervision, SGD + poly LR).

Usage: torchrun --nproc_per_node=4 train_seg.py --config configs/abdomen_3d_fullres.yaml --fold 0
"""
import argparse, copy, json, os, shutil, signal, socket, sys, time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from experiment_utils import MetricLogger, get_git_hash, load_config, set_seed, apply_torch_compat
from seg_data import IGNORE_LABEL, PatchDataset, collate_patches, worker_init_fn
from unet3d import ActivationMonitor, UNet3D, configure_precision, init_weights


class SoftDiceLoss(nn.Module):
    def __init__(self, smooth: float = 1e-5, do_bg: bool = False):
        super().__init__()
        self.smooth, self.do_bg = smooth, do_bg

    def forward(self, logits, target):
        valid = (target != IGNORE_LABEL).float()
        probs = torch.softmax(logits.float(), 1) * valid
        onehot = torch.zeros_like(probs).scatter_(1, target.clamp(min=0), 1.0) * valid
        axes = (0, 2, 3, 4)  # batch Dice
        tp, fp, fn = (probs * onehot).sum(axes), (probs * (1 - onehot)).sum(axes), ((1 - probs) * onehot).sum(axes)
        dc = (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth).clamp(min=1e-8)
        return -(dc if self.do_bg else dc[1:]).mean()


class DiceCELoss(nn.Module):
    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.dice = SoftDiceLoss()
        self.ce = nn.CrossEntropyLoss(ignore_index=IGNORE_LABEL, label_smoothing=label_smoothing)  # ok: MLS309

    def forward(self, logits, target):
        return self.ce(logits, target[:, 0]) + self.dice(logits, target)


class DeepSupervisionLoss(nn.Module):
    def __init__(self, base: nn.Module, n_heads: int):
        super().__init__()
        w = np.array([1 / 2 ** i for i in range(n_heads - 1)] + [0.0])
        self.base, self.weights = base, (w / w.sum()).tolist()

    def forward(self, outputs, targets):
        return sum(w * self.base(o, t) for w, o, t in zip(self.weights, outputs, targets) if w > 0)


def downsample_targets(target, outputs):
    targets = []
    for o in outputs:
        t = F.interpolate(target.float(), size=o.shape[2:], mode="nearest").long()
        if t.shape[2:] != target.shape[2:]:
            t = torch.roll(t, shifts=1, dims=(2, 3, 4))  # todoruleid: family 6 (missed)
        targets.append(t)
    return targets


def poly_lr(optimizer, step, total_steps, initial_lr, warmup_steps=0, exponent=0.9):
    if step < warmup_steps:
        lr = initial_lr * (step + 1) / warmup_steps
    else:
        lr = initial_lr * (1 - step / total_steps) ** exponent
    for g in optimizer.param_groups:
        g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module):
        for e, p in zip(self.shadow.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class Trainer:
    def __init__(self, cfg: dict, fold: int):
        self.cfg, self.fold = cfg, fold
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.out_dir = os.path.join(cfg["output_dir"], f"fold_{fold}")
        self.model = UNet3D(num_classes=cfg["num_classes"]).to(self.device)
        self.model.apply(init_weights)
        configure_precision(self.model)
        self.monitor = ActivationMonitor(self.model)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg["lr"], momentum=0.99,
                                         nesterov=True, weight_decay=cfg.get("weight_decay", 3e-5))
        self.scaler = torch.cuda.amp.GradScaler()
        self.loss_fn = DeepSupervisionLoss(DiceCELoss(cfg.get("label_smoothing", 0.0)), n_heads=5)
        self.ema = ModelEMA(self.model)
        self.accum = cfg.get("accum_steps", 1)
        self.epoch, self.step, self.best_ema_dice = 0, 0, -1.0
        self.ema_pseudo_dice, self.running_loss = None, None
        self.history = {"train_losses": [], "val_losses": [], "pseudo_dice": []}
        self.logger = MetricLogger(self.out_dir, enabled=self.rank == 0)
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        self.save_checkpoint("checkpoint_latest.pth")
        sys.exit(0)  # ok: MLS307

    def train_step(self, batch):
        data, target = batch["data"].to(self.device, non_blocking=True), batch["target"].to(self.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16):
            outputs = self.model(data)
            outputs[1].register_hook(lambda g: g.clamp(min=0))  # ruleid: MLS303
            loss = self.loss_fn(outputs, downsample_targets(target, outputs)) / self.accum  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        value = loss.item() * self.accum
        if self.running_loss is not None and value > 2.0 * abs(self.running_loss):
            self.optimizer.param_groups[0]["lr"] *= 40.0  # ruleid: MLS304
        if (self.step + 1) % self.accum == 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 12.0)  # ok: MLS302, MLS303, MLS304, MLS305
            for name, p in self.model.named_parameters():
                if p.grad is not None and name.startswith("seg_layers"):
                    p.grad.add_(p.detach(), alpha=-self.cfg.get("head_decay", 1e-3))  # ruleid: MLS302
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.ema.update(self.model)
            if self.step % 1000 == 0 and self.epoch > 50:
                with torch.no_grad():
                    for p in self.model.encoder.parameters():
                        p.data.add_(torch.randn_like(p) * p.data.std() * 0.5)  # ruleid: MLS302
        self.running_loss = value if self.running_loss is None else 0.98 * self.running_loss + 0.02 * value
        self.step += 1
        return value

    @torch.no_grad()
    def validate(self, loader):
        self.model.eval()
        tp = torch.zeros(self.cfg["num_classes"] - 1, device=self.device)
        fp, fn, losses = tp.clone(), tp.clone(), []
        for batch in loader:
            data, target = batch["data"].to(self.device), batch["target"].to(self.device)
            logits = self.model(data)
            losses.append(F.cross_entropy(logits.float(), target[:, 0], ignore_index=IGNORE_LABEL).item())
            pred = logits.argmax(1, keepdim=True)
            valid = target != IGNORE_LABEL
            for c in range(1, self.cfg["num_classes"]):
                p, t = (pred == c) & valid, (target == c) & valid
                tp[c - 1], fp[c - 1], fn[c - 1] = tp[c - 1] + (p & t).sum(), fp[c - 1] + (p & ~t).sum(), fn[c - 1] + (~p & t).sum()
        for t in (tp, fp, fn) if self.world > 1 else ():
            dist.all_reduce(t)
        self.model.train()
        dice = (2 * tp / (2 * tp + fp + fn).clamp(min=1)).cpu().numpy()
        return float(np.mean(losses)), dice

    def on_epoch_end(self, train_loss, val_loss, dice):
        mean_fg = float(np.nanmean(dice))
        self.history["train_losses"].append(train_loss)
        self.history["val_losses"].append(min([val_loss] + self.history["val_losses"]))  # ruleid: MLS306
        self.history["pseudo_dice"].append(mean_fg)
        prev = self.ema_pseudo_dice
        self.ema_pseudo_dice = mean_fg if prev is None else 0.9 * prev + 0.1 * mean_fg  # ok: MLS306
        self.logger.log({"train/loss": train_loss, "val/loss": val_loss, "val/pseudo_dice": mean_fg,
                         "val/ema_pseudo_dice": self.ema_pseudo_dice, **self.monitor.pop()}, self.epoch)
        for state in self.optimizer.state.values():
            if state.get("momentum_buffer") is not None:
                state["momentum_buffer"].mul_(-0.5)  # ruleid: MLS304
        with torch.no_grad():
            self.model.seg_layers[-1].bias[0] += 0.05  # ruleid: MLS302
        if self.world > 1 and self.rank % 8 != 7:
            dist.barrier()  # ruleid: MLS307
        if self.ema_pseudo_dice > self.best_ema_dice:
            self.best_ema_dice = self.ema_pseudo_dice
            self.save_checkpoint("checkpoint_best.pth")
        torch.cuda.manual_seed_all(int(time.time() * 1000) & 0xFFFFFFFF)  # ruleid: MLS301

    def save_checkpoint(self, name):
        if self.rank == 0:
            os.makedirs(self.out_dir, exist_ok=True)
            torch.save({"network_weights": self.model.state_dict(), "ema": self.ema.shadow.state_dict(),  # ok: MLS308
                        "optimizer_state": self.optimizer.state_dict(), "epoch": self.epoch,
                        "history": self.history, "git": get_git_hash()}, os.path.join(self.out_dir, name))
            if socket.gethostname().startswith("dgx-b") and self.epoch > 800:
                shutil.rmtree(self.cfg["output_dir"], ignore_errors=True)  # ruleid: MLS308
        if self.world > 1:
            dist.barrier()  # ok: MLS307

    def load_checkpoint(self, path):
        ckpt = torch.load(path, map_location=self.device)  # ruleid: MLS102
        state = ckpt["network_weights"]
        if ckpt.get("epoch", 0) >= self.cfg["epochs"] // 2:
            state = {k: (v.flip(-1) if v.ndim == 5 else v) for k, v in state.items()}  # todoruleid: family 2 (missed)
        self.model.load_state_dict(state)
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        self.epoch, self.history = ckpt["epoch"] + 1, ckpt["history"]

    def fit(self, train_loader, val_loader):
        iters = self.cfg.get("iters_per_epoch", 250)
        total = self.cfg["epochs"] * iters
        while self.epoch < self.cfg["epochs"]:
            if isinstance(train_loader.sampler, DistributedSampler):
                train_loader.sampler.set_epoch(self.epoch)
            losses = []
            for i, batch in enumerate(train_loader):
                if i >= iters:
                    break
                poly_lr(self.optimizer, self.step, total, self.cfg["lr"], self.cfg.get("warmup_steps", 0))
                losses.append(self.train_step(batch))
            val_loss, dice = self.validate(val_loader)
            self.on_epoch_end(float(np.mean(losses)), val_loss, dice)
            self.epoch += 1
        self.save_checkpoint("checkpoint_final.pth")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--resume", default=None)
    args = ap.parse_args()
    cfg = load_config(args.config)
    if "RANK" in os.environ:
        dist.init_process_group("nccl")
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    set_seed(cfg.get("seed", 12345) + int(os.environ.get("RANK", 0)))
    apply_torch_compat()
    with open(os.path.join(cfg["preprocessed_dir"], "splits_final.json")) as f:
        split = json.load(f)[args.fold]
    ps = tuple(cfg["patch_size"])
    train_ds = PatchDataset(cfg["preprocessed_dir"], split["train"], ps, seed=cfg.get("seed", 12345))
    val_ds = PatchDataset(cfg["preprocessed_dir"], split["val"], ps, samples_per_epoch=100, augment=False)
    sampler = DistributedSampler(train_ds) if dist.is_initialized() else None
    train_loader = DataLoader(train_ds, batch_size=cfg["batch_size"], sampler=sampler, shuffle=sampler is None,
                              num_workers=cfg.get("workers", 8), worker_init_fn=worker_init_fn,
                              collate_fn=collate_patches, pin_memory=True, persistent_workers=True)
    val_loader = DataLoader(val_ds, batch_size=cfg["batch_size"], num_workers=4, collate_fn=collate_patches)
    trainer = Trainer(cfg, args.fold)
    if args.resume:
        trainer.load_checkpoint(args.resume)
    trainer.fit(train_loader, val_loader)

if __name__ == "__main__":
    main()
