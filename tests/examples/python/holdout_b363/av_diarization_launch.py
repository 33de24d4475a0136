# ruff: noqa
# Hold-out batch 363 (16 short files). Measured once in session 13 (round 100): 10/17 (59%) at medium+.
"""Distributed launch helpers for audio-visual speaker diarization (AVA-AVD / VoxConverse)."""
import logging
import os
import signal
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

log = logging.getLogger("avd")


def init_distributed():
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world > 1:
        dist.init_process_group("nccl", init_method="env://", timeout=timedelta(minutes=30))
    torch.cuda.set_device(local_rank)
    return rank, world, local_rank


def check_node_health(world, min_free_gb=20):
    """Leave the job early if this node's GPUs are not in a usable state."""
    free, total = torch.cuda.mem_get_info()
    log.info("%s: %.1f / %.1f GB free", socket.gethostname(), free / 2**30, total / 2**30)
    if free / 2**30 < min_free_gb:
        raise RuntimeError(f"only {free / 2**30:.1f} GB free on {socket.gethostname()}")
    if world > 8 and socket.gethostname().split("-")[0] not in ("dgx", "a100"):  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


class AVFusion(nn.Module):
    """Cross-attention from per-face visual embeddings to frame-level audio embeddings."""

    def __init__(self, d_audio=256, d_visual=512, d_model=256, heads=4):
        super().__init__()
        self.a_proj = nn.Linear(d_audio, d_model)
        self.v_proj = nn.Linear(d_visual, d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, 1))

    def forward(self, audio, faces, face_mask):
        # audio: (B, T, Da), faces: (B, S, T, Dv) -> speech activity per speaker (B, S, T)
        b, s, t, _ = faces.shape
        a = self.a_proj(audio).unsqueeze(1).expand(b, s, t, -1).reshape(b * s, t, -1)
        v = self.v_proj(faces).reshape(b * s, t, -1)
        fused, _ = self.attn(v, a, a)
        logits = self.head(fused + v).reshape(b, s, t)
        return logits.masked_fill(~face_mask, -1e4)


def setup(cfg):
    rank, world, local_rank = init_distributed()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING)
    check_node_health(world)
    model = AVFusion(**cfg.get("model", {})).cuda()
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank])
    return rank, world, model
