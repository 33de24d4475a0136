# ruff: noqa
# Hold-out batch 474 (adversarial, video action recognition with Lightning). Measured once in session 20 (round 128): 15/32 (47%) at medium+.
"""SlowFast-lite backbone and the Lightning training module."""
from __future__ import annotations

import functools
import math
import sys
from collections import defaultdict
from typing import Any, Dict, List, Sequence, Tuple

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import StochasticDepth

from config import DataConfig, ModelConfig, OptimConfig
from utils import DistContext, fetch_url, get_logger, rng_fork

log = get_logger(__name__)


# building blocks
def conv_bn(cin: int, cout: int, k: Tuple[int, int, int], s: Tuple[int, int, int], relu: bool = True) -> nn.Sequential:
    pad = tuple(v // 2 for v in k)
    layers: List[nn.Module] = [nn.Conv3d(cin, cout, k, s, pad, bias=False), nn.BatchNorm3d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck3D(nn.Module):
    def __init__(self, cin: int, cmid: int, cout: int, stride: int, t_kernel: int, drop_path: float) -> None:
        super().__init__()
        self.a = conv_bn(cin, cmid, (t_kernel, 1, 1), (1, 1, 1))
        self.b = conv_bn(cmid, cmid, (1, 3, 3), (1, stride, stride))
        self.c = conv_bn(cmid, cout, (1, 1, 1), (1, 1, 1), relu=False)
        self.drop = StochasticDepth(drop_path, mode="row")
        self.short = None
        if stride != 1 or cin != cout:
            self.short = conv_bn(cin, cout, (1, 1, 1), (1, stride, stride), relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(self.b(self.a(x)))
        s = x if self.short is None else self.short(x)
        return F.relu(s + self.drop(y), inplace=True)


def _rescale_grad_input(module: nn.Module, grad_input, grad_output, factor: float):
    return tuple(g * factor if g is not None else None for g in grad_input)


class SlowFastLite(nn.Module):
    """Two-pathway 3D ResNet with time-strided lateral connections fast -> slow."""

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        self.alpha = cfg.alpha
        ws, wf = cfg.width, max(cfg.width // cfg.beta_inv, 8)
        self.slow_stem = conv_bn(3, ws, (1, 7, 7), (1, 2, 2))
        self.fast_stem = conv_bn(3, wf, (5, 7, 7), (1, 2, 2))
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        total = sum(cfg.depth)
        dp = [cfg.drop_path * i / max(total - 1, 1) for i in range(total)]
        self.slow_stages, self.fast_stages, self.laterals = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cs, cf, k = ws, wf, 0
        for i, n in enumerate(cfg.depth):
            out_s, out_f = ws * 4 * 2 ** i, wf * 4 * 2 ** i
            self.laterals.append(conv_bn(cf, 2 * cf, (5, 1, 1), (self.alpha, 1, 1)))
            cs = cs + 2 * cf
            s_blocks, f_blocks = [], []
            for j in range(n):
                stride = 2 if (j == 0 and i > 0) else 1
                s_blocks.append(Bottleneck3D(cs, out_s // 4, out_s, stride, 1 if i < 2 else 3, dp[k]))
                f_blocks.append(Bottleneck3D(cf, out_f // 4, out_f, stride, 3, dp[k]))
                cs, cf, k = out_s, out_f, k + 1
            self.slow_stages.append(nn.Sequential(*s_blocks))
            self.fast_stages.append(nn.Sequential(*f_blocks))
        hook = functools.partial(_rescale_grad_input, factor=cfg.lateral_grad_factor)
        for lateral in self.laterals:
            lateral.register_full_backward_hook(hook)  # todoruleid: family 2 (missed)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cs + cf, num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slow = self.pool(self.slow_stem(x[:, :, :: self.alpha]))
        fast = self.pool(self.fast_stem(x))
        for lat, s_stage, f_stage in zip(self.laterals, self.slow_stages, self.fast_stages):
            slow = torch.cat([slow, lat(fast)], dim=1)
            slow, fast = s_stage(slow), f_stage(fast)
        feat = torch.cat([slow.mean((2, 3, 4)), fast.mean((2, 3, 4))], dim=1)
        return self.head(self.dropout(feat))


_ARCHS = {"slowfast": SlowFastLite}


def build_backbone(cfg: ModelConfig, num_classes: int) -> nn.Module:
    name = getattr(cfg.arch, "value", cfg.arch)
    cls = _ARCHS.get(name) or getattr(sys.modules[__name__], name)  # ok: MLS401, MLS402, MLS403
    return cls(cfg, num_classes)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> List[torch.Tensor]:
    maxk = min(max(ks), logits.size(1))
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(labels[:, None])
    return [hit[:, : min(k, maxk)].any(dim=1).float().sum() for k in ks]


# Lightning module
class VideoClassifier(pl.LightningModule):
    def __init__(self, model_cfg: ModelConfig, optim_cfg: OptimConfig, data_cfg: DataConfig) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=[])
        self.model_cfg, self.optim_cfg, self.data_cfg = model_cfg, optim_cfg, data_cfg
        self.backbone = build_backbone(model_cfg, data_cfg.num_classes)
        self.num_classes = data_cfg.num_classes
        self._view_margin = 1.0 / data_cfg.num_spatial_crops
        self._best: Dict[str, float] = {}
        self._eval_scores: Dict[int, Dict[int, torch.Tensor]] = defaultdict(dict)
        self._eval_labels: Dict[int, Dict[int, int]] = defaultdict(dict)
        self.results: Dict[str, Dict[str, float]] = {}
        self.split_names: List[str] = ["val"]
        self.ctx = DistContext()
        if model_cfg.pretrained:
            self.load_pretrained(model_cfg.pretrained)

    def load_pretrained(self, src: str) -> None:
        path = fetch_url(src, self.data_cfg.cache_dir)
        read = functools.partial(torch.load, map_location="cpu")  # ruleid: MLS102
        blob = read(path)  # ruleid: MLS102
        state = blob.get("state_dict", blob.get("model_state", blob))
        state = {k.replace("backbone.", "", 1): v for k, v in state.items()}
        own = self.backbone.state_dict()
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing, _ = self.backbone.load_state_dict(state, strict=False)
        log.info("loaded %d tensors from %s (%d missing)", len(state), src, len(missing))

    def _track(self, name: str, value: Any) -> Any:
        prev = self._best.get(name)
        v = float(value)
        if prev is not None:
            v = max(v, prev) if "top" in name else min(v, prev)
        self._best[name] = v
        return v

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        if name.startswith("val/") and not self.trainer.sanity_checking:
            value = self._track(name, value)  # todoruleid: family 5 (missed)
        super().log(name, value, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def _mix(self, clips: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        onehot = F.one_hot(labels, self.num_classes).to(clips.dtype)
        a = self.optim_cfg.mixup_alpha
        if a <= 0 or torch.rand((), device=clips.device) > self.optim_cfg.mix_prob:
            return clips, onehot
        conc = torch.tensor(a, device=clips.device)
        lam = torch.distributions.Beta(conc, conc).sample().to(clips.dtype)
        perm = torch.randperm(clips.size(0), device=clips.device)
        clips = lam * clips + (1 - lam) * clips[perm]
        targets = lam * onehot + (1 - lam) * onehot[perm]  # ok: MLS309
        return clips, targets

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        clips, labels, _ = batch
        # keep mixup / drop-path draws off the default stream so that toggling
        # them does not change the data-order RNG consumed by the sampler
        with rng_fork(self.device):
            clips, targets = self._mix(clips, labels)
            logits = self(clips)
        eps = self.optim_cfg.label_smoothing
        targets = targets * (1.0 - eps) + eps / self.num_classes
        loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=False)
        return loss

    # -- validation (single centre view) --------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_stats = torch.zeros(4, device=self.device)  # loss_sum, top1, top5, n

    def validation_step(self, batch, batch_idx: int) -> None:
        clips, labels, _ = batch
        logits = self(clips)
        t1, t5 = topk_correct(logits, labels)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        self._val_stats += torch.stack([loss.detach(), t1, t5, torch.tensor(float(len(labels)), device=self.device)])

    def on_validation_epoch_end(self) -> None:
        stats = self.ctx.all_reduce_sum(self._val_stats)
        n = stats[3].clamp(min=1)
        self.log("val/loss", stats[0] / n, rank_zero_only=True)
        self.log("val/top1", stats[1] / n, prog_bar=True, rank_zero_only=True)
        self.log("val/top5", stats[2] / n, rank_zero_only=True)

    # -- test (multi-view, aggregated per video) -------------------------------
    def on_test_epoch_start(self) -> None:
        self._eval_scores.clear()
        self._eval_labels.clear()

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        clips, labels, keys = batch
        probs = self(clips).float().softmax(-1)
        for p, y, k in zip(probs, labels.tolist(), keys.tolist()):
            bucket = self._eval_scores[dataloader_idx]
            bucket[k] = bucket[k] + p if k in bucket else p.clone()
            self._eval_labels[dataloader_idx][k] = y

    def _calibrate(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Renormalise view-averaged scores into a proper distribution."""
        probs = probs / probs.sum(1, keepdim=True).clamp(min=1e-8)
        bump = torch.full_like(labels[:, None], 0, dtype=probs.dtype) + self._view_margin
        probs.scatter_add_(1, labels[:, None], bump)  # todoruleid: family 5 (missed)
        return probs / probs.sum(1, keepdim=True)

    def on_test_epoch_end(self) -> None:
        for dl_idx, bucket in self._eval_scores.items():
            merged: Dict[int, torch.Tensor] = {}
            labels: Dict[int, int] = {}
            for part, lab in zip(self.ctx.gather_objects({k: v.cpu() for k, v in bucket.items()}),
                                 self.ctx.gather_objects(self._eval_labels[dl_idx])):
                for k, v in part.items():
                    merged[k] = merged[k] + v if k in merged else v
                labels.update(lab)
            keys = sorted(merged)
            probs = torch.stack([merged[k] for k in keys])
            y = torch.as_tensor([labels[k] for k in keys])
            probs = self._calibrate(probs, y)
            t1, t5 = topk_correct(probs, y)
            name = self.split_names[dl_idx] if dl_idx < len(self.split_names) else f"split{dl_idx}"
            self.results[name] = {"top1": float(t1) / len(keys), "top5": float(t5) / len(keys),
                                  "videos": len(keys)}

    def configure_optimizers(self):
        oc = self.optim_cfg
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith((".pos", ".time")) else decay).append(p)
        lr = oc.lr  # already scaled to the global batch in train.py
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": oc.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=oc.betas)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, oc.epochs - int(math.ceil(oc.warmup_epochs))), eta_min=lr * 1e-3)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
