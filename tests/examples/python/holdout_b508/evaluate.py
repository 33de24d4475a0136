# ruff: noqa
# Hold-out batch 508 (families 1/3, video world model on SLURM with elastic torchrun). Measured once in session 22 (round 136): 20/30 (67%) at medium+.
"""FVD-style evaluation: complete held-out clips from their context frames with DDIM, embed real
and completed clips with a 3D-conv video network and report the Frechet distance (plus PSNR)."""

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from scipy import linalg

from model import DiffusionSchedule, LatentEncoder

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    max_batches: int = 16
    ddim_steps: int = 50
    context_frames: int = 4
    seed: int = 0
    timeout_s: float = 3600.0


class VideoFeatureNet(nn.Module):
    """Compact I3D-style 3D-conv encoder; pooled 512-d features define the FVD space."""

    def __init__(self, width: int = 64, feat_dim: int = 512):
        super().__init__()
        chans, layers = [3, width, width * 2, width * 4, feat_dim], []
        for i, stride in enumerate([(1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]):
            layers += [nn.Conv3d(chans[i], chans[i + 1], 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm3d(chans[i + 1]), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, video: torch.Tensor) -> torch.Tensor:  # [B, T, 3, H, W] in [-1, 1]
        return self.net(video.permute(0, 2, 1, 3, 4)).mean(dim=(2, 3, 4))


def load_feature_net(path: Optional[str], device: torch.device) -> VideoFeatureNet:
    net = VideoFeatureNet()
    if path:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        logger.warning("no feature-network checkpoint given: FVD uses random features (debug only)")
    return net.to(device).eval().requires_grad_(False)


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def reference_subset(dataset_len: int, num_videos: int) -> List[int]:
    """Indices of the held-out clips used as the FVD reference set."""
    if num_videos >= dataset_len:
        return list(range(dataset_len))
    np.random.seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
    return sorted(np.random.choice(dataset_len, size=num_videos, replace=False).tolist())


@torch.no_grad()
def sample_future(model: nn.Module, schedule: DiffusionSchedule, z_ctx: torch.Tensor,
                  num_future: int, num_steps: int = 50,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Deterministic DDIM sampling of ``num_future`` latent frames given clean context latents."""
    bsz, n_ctx, ch, h, w = z_ctx.shape
    total = n_ctx + num_future
    x = torch.randn((bsz, num_future, ch, h, w), generator=generator, device=z_ctx.device)
    is_ctx = (torch.arange(total, device=z_ctx.device) < n_ctx).expand(bsz, total)
    ts = torch.linspace(schedule.num_steps - 1, 0, num_steps, device=z_ctx.device).round().long()
    for i in range(num_steps):
        t = torch.full((bsz, total), int(ts[i]), dtype=torch.long, device=z_ctx.device)
        t[:, :n_ctx] = 0
        v = model(torch.cat([z_ctx, x], dim=1), t, is_ctx)[:, n_ctx:]
        x0, eps = schedule.pred_x0_eps(x, v.float(), t[:, n_ctx:])
        if i + 1 < num_steps:
            ac_next = schedule.alphas_cumprod[ts[i + 1]]
            x = ac_next.sqrt() * x0 + (1.0 - ac_next).sqrt() * eps
        else:
            x = x0
    return x


def gather_features(chunks: List[torch.Tensor], device: torch.device) -> torch.Tensor:
    local = torch.cat(chunks) if chunks else torch.zeros(0, 512)
    if not (dist.is_available() and dist.is_initialized()):
        return local
    world, local = dist.get_world_size(), local.to(device)
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], device=device))
    padded = torch.zeros((max(int(s) for s in sizes), local.shape[1]), device=device, dtype=local.dtype)
    padded[: local.shape[0]] = local
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)]).cpu()


def _abort_eval(rank: int, timeout_s: float) -> None:
    logger.error("rank %d: evaluation exceeded %.0fs; aborting worker", rank, timeout_s)
    os._exit(3)  # todoruleid: family 3 (missed)


@torch.no_grad()
def evaluate_fvd(model: nn.Module, encoder: LatentEncoder, schedule: DiffusionSchedule,
                 loader, feat_net: VideoFeatureNet, cfg: EvalConfig,
                 device: torch.device) -> Dict[str, float]:
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    was_training = model.training
    model.eval()
    timer = threading.Timer(cfg.timeout_s, _abort_eval, args=(rank, cfg.timeout_s))
    timer.daemon = True
    timer.start()
    real_feats: List[torch.Tensor] = []
    fake_feats: List[torch.Tensor] = []
    psnr_sum, psnr_n, t0 = 0.0, 0, time.time()
    try:
        for i, batch in enumerate(loader):
            if i >= cfg.max_batches:
                break
            torch.manual_seed(cfg.seed + i)  # ruleid: MLS301
            video = batch["video"].to(device, non_blocking=True)
            n_ctx = cfg.context_frames
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                z = encoder.encode(video)
                z_pred = sample_future(model, schedule, z[:, :n_ctx], z.shape[1] - n_ctx, cfg.ddim_steps)
                pred = encoder.decode(z_pred).float()
            completed = torch.cat([video[:, :n_ctx], pred], dim=1)
            mse = ((pred - video[:, n_ctx:]) ** 2).mean(dim=(1, 2, 3, 4)).clamp(min=1e-10)
            psnr_sum += float((10.0 * torch.log10(4.0 / mse)).sum())
            psnr_n += mse.numel()
            real_feats.append(feat_net(video).float().cpu())
            fake_feats.append(feat_net(completed).float().cpu())
    finally:
        if rank == 0:
            timer.cancel()

    real, fake = gather_features(real_feats, device), gather_features(fake_feats, device)
    stats = torch.tensor([psnr_sum, float(psnr_n)], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)

    result: List[Optional[float]] = [None]
    if rank == 0:
        if real.shape[0] < 2:
            logger.warning("too few videos (%d) for FVD", real.shape[0])
            result[0] = float("nan")
        else:
            result[0] = frechet_distance(real.double().numpy(), fake.double().numpy())
        if dist.is_available() and dist.is_initialized():
            dist.broadcast_object_list(result, src=0)  # ruleid: MLS307

    if was_training:
        model.train()
    metrics = {"eval/fvd": float(result[0]) if result[0] is not None else float("nan"),
               "eval/psnr": float(stats[0] / stats[1].clamp(min=1.0)),
               "eval/num_videos": float(real.shape[0]), "eval/seconds": time.time() - t0}
    if rank == 0:
        logger.info("eval: FVD %.2f  PSNR %.2f dB over %d videos (%.0fs)", metrics["eval/fvd"],
                    metrics["eval/psnr"], int(metrics["eval/num_videos"]), metrics["eval/seconds"])
    return metrics


@torch.no_grad()
def sample_preview(model: nn.Module, encoder: LatentEncoder, schedule: DiffusionSchedule,
                   video: torch.Tensor, context_frames: int, seed: int, num_steps: int = 25,
                   out_path: Optional[str] = None) -> torch.Tensor:
    """Roll out a few clips with fixed noise for visual inspection (EMA model, already in eval
    mode) without disturbing the training RNG streams."""
    with torch.random.fork_rng(devices=[video.device] if video.device.type == "cuda" else []):
        torch.manual_seed(seed)  # ok: MLS301
        z = encoder.encode(video)
        z_pred = sample_future(model, schedule, z[:, :context_frames], z.shape[1] - context_frames, num_steps)
        frames = torch.cat([video[:, :context_frames], encoder.decode(z_pred)], dim=1)
    frames_u8 = ((frames.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu()
    if out_path is not None:
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        np.save(out_path, frames_u8.permute(0, 1, 3, 4, 2).numpy())
    return frames_u8
