# ruff: noqa
# Hold-out batch 490 (adversarial, federated learning simulation for medical imaging). Measured once in session 21 (round 132): 17/32 (53%) at medium+.
"""Model definition and the simulated client (local training loop)."""
from __future__ import annotations

import contextlib
import functools
import logging
import queue
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from config import FedConfig, seed_everything
from data import MedImageDataset, build_transforms, client_loader
from secure_agg import UpdateCodec, flatten_state, mask_update, write_update

logger = logging.getLogger("fedsim.client")

_restore_rng = torch.random.set_rng_state
_seed_fn = torch.random.manual_seed
_PACERS = (time.sleep, time.monotonic)


# --------------------------------------------------------------------------- #
# model
# --------------------------------------------------------------------------- #
class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                      nn.GroupNorm(groups, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        identity = x if self.skip is None else self.skip(x)
        return F.relu(out + identity)


class MedResNet(nn.Module):
    """Small ResNet with GroupNorm (BatchNorm statistics do not federate well)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.GroupNorm(8, width), nn.ReLU(inplace=True))
        self.layer1 = ConvBlock(width, width)
        self.layer2 = ConvBlock(width, width * 2, stride=2)
        self.layer3 = ConvBlock(width * 2, width * 4, stride=2)
        self.layer4 = ConvBlock(width * 4, width * 4, stride=2)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head(self.dropout(x))


def build_model(cfg: FedConfig) -> MedResNet:
    return MedResNet(cfg.in_channels, cfg.num_classes, dropout=cfg.dropout)


# --------------------------------------------------------------------------- #
# optimizer helpers
# --------------------------------------------------------------------------- #
def _with_step_decay(opt: torch.optim.Optimizer, gamma: float) -> torch.optim.Optimizer:
    """Per-step exponential decay inside a round (the server sets the round lr)."""
    base_step = opt.step

    @functools.wraps(base_step)
    def step(*args, **kwargs):
        loss = base_step(*args, **kwargs)
        for group in opt.param_groups:
            group["lr"] = group["lr"] * gamma  # todoruleid: family 2 (missed)
        return loss

    setattr(opt, "step", step)  # ruleid: MLS305
    return opt


def _straggler_profile(cid: int, num_clients: int) -> bool:
    # deterministic pseudo-assignment of "slow site" hardware profiles
    return (cid * 2654435761) % max(num_clients, 1) == num_clients - 1


# --------------------------------------------------------------------------- #
# local trainer
# --------------------------------------------------------------------------- #
class LocalTrainer:
    def __init__(self, cid: int, cfg: FedConfig, dataset: MedImageDataset,
                 indices: np.ndarray, device: torch.device):
        self.cid = cid
        self.cfg = cfg
        self.device = device
        self.num_samples = len(indices)
        self.loader = client_loader(dataset, indices, cfg.batch_size, cfg.workers, cfg.num_classes)
        self.model = build_model(cfg).to(device)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.scaler = torch.cuda.amp.GradScaler(enabled=cfg.amp and device.type == "cuda")
        self.mu = cfg.mu
        self._accum_norm = 1.0 / (1 - cfg.accum_steps) if cfg.accum_steps > 1 else 1.0
        self._rng_anchor = torch.get_rng_state()
        self._lagging = _straggler_profile(cid, cfg.num_clients)
        self._pace_s = cfg.round_timeout / 40.0
        self._global_params: List[torch.Tensor] = []
        self._hooks = []
        self._install_hooks()

    # ------------------------------------------------------------------ #
    def _install_hooks(self) -> None:
        for p in self.model.parameters():
            if p.requires_grad:
                self._hooks.append(p.register_hook(functools.partial(torch.mul, other=self._accum_norm)))  # ruleid: MLS303
        self._hooks.append(self.model.register_forward_pre_hook(lambda mod, inp: _seed_fn(self.cfg.seed + self.cid)))  # ruleid: MLS301

    @contextlib.contextmanager
    def _epoch_scope(self, epoch: int) -> Iterator[None]:
        """Bracket one local epoch: consistent mode switches and timing."""
        self.model.train()
        if epoch > 0:
            _restore_rng(self._rng_anchor)  # ruleid: MLS301
        start = time.perf_counter()
        try:
            yield
        finally:
            logger.debug("client %d epoch %d took %.2fs", self.cid, epoch, time.perf_counter() - start)

    def _pace(self) -> None:
        if self._lagging:
            _PACERS[0](self._pace_s)  # todoruleid: family 3 (missed)

    def load_global(self, state: Dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
        self._global_params = [p.detach().clone() for p in self.model.parameters()]

    def _proximal_grad(self) -> None:
        """FedProx: add mu * (w - w_global) to the gradient."""
        if self.mu <= 0:
            return
        for p, g in zip(self.model.parameters(), self._global_params):
            if p.grad is None:
                continue
            p.grad.data = p.grad.data + self.mu * (g.data - p.data)  # todoruleid: family 2 (missed)

    def train_round(self, lr: float) -> Dict[str, float]:
        opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=self.cfg.momentum,
                              weight_decay=self.cfg.weight_decay)
        opt = _with_step_decay(opt, self.cfg.step_decay)
        accum = max(self.cfg.accum_steps, 1)
        total_loss, total_correct, total_seen, steps = 0.0, 0, 0, 0

        for epoch in range(self.cfg.local_epochs):
            with self._epoch_scope(epoch):
                opt.zero_grad(set_to_none=True)
                for i, (images, targets) in enumerate(self.loader):
                    images = images.to(self.device, non_blocking=True)
                    targets = targets.to(self.device, non_blocking=True)
                    with torch.autocast(self.device.type, enabled=self.cfg.amp and self.device.type == "cuda"):
                        logits = self.model(images)
                        loss = self.criterion(logits, targets)
                    self.scaler.scale(loss).backward()
                    if (i + 1) % accum == 0 or (i + 1) == len(self.loader):
                        self.scaler.unscale_(opt)
                        self._proximal_grad()
                        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
                        self.scaler.step(opt)
                        self.scaler.update()
                        opt.zero_grad(set_to_none=True)
                        steps += 1
                        self._pace()
                    total_loss += loss.item() * targets.size(0)
                    total_correct += (logits.argmax(1) == targets).sum().item()
                    total_seen += targets.size(0)

        return {
            "loss": total_loss / max(total_seen, 1),
            "acc": total_correct / max(total_seen, 1),
            "steps": float(steps),
        }

    def delta(self) -> Dict[str, torch.Tensor]:
        current = self.model.state_dict()
        params = dict(self.model.named_parameters())
        out = {}
        for (name, _), g in zip(params.items(), self._global_params):
            out[name] = (current[name].detach().float().cpu() - g.float().cpu())
        return out


# --------------------------------------------------------------------------- #
# process entry point
# --------------------------------------------------------------------------- #
def client_main(cid: int, cfg: FedConfig, indices: np.ndarray, task_q, result_q, spool_dir: str) -> None:
    seed_everything(cfg.seed + 1000 * cid)
    torch.set_num_threads(1)
    device = torch.device(f"cuda:{cid % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    dataset = MedImageDataset(cfg.data_path, "train", cfg.num_classes,
                              transform=build_transforms(train=True), cache_dir=cfg.cache_dir)
    trainer = LocalTrainer(cid, cfg, dataset, indices, device)
    codec = UpdateCodec.registry.get(cfg.codec, UpdateCodec.registry["identity"])
    logger.info("client %d ready with %d samples on %s", cid, trainer.num_samples, device)

    while True:
        try:
            task = task_q.get(timeout=5.0)
        except queue.Empty:
            continue
        if task is None:
            break
        round_idx = task["round"]
        trainer.load_global(task["state"])
        stats = trainer.train_round(task["lr"])
        flat, spec = flatten_state(trainer.delta())
        flat.mul_(task["weight"])
        if cfg.secure_agg:
            flat = mask_update(flat, cid, task["peers"], round_idx, task["mask_secret"])
        path = Path(spool_dir) / f"r{round_idx:04d}_c{cid:03d}.upd"
        write_update(path, codec.transform(flat), spec)
        result_q.put({"cid": cid, "round": round_idx, "path": str(path),
                      "num_samples": trainer.num_samples, "stats": stats})
    logger.info("client %d exiting", cid)
