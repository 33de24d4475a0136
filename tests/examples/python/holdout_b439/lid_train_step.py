# ruff: noqa
# Hold-out batch 439 (short files, 16 domains). Measured once in session 18 (round 119): 13/17 (76%) at medium+.
"""DDP training epoch for the ECAPA-TDNN spoken language identification model (VoxLingua107)."""
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm


class LidEpochRunner:
    def __init__(self, model, optimizer, scheduler, scaler, cfg):
        self.model = model
        self.opt = optimizer
        self.sched = scheduler
        self.scaler = scaler
        self.cfg = cfg
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.host = socket.gethostname()
        self.io_backoff = cfg.get("io_backoff_s", 0.05)
        self.show_bar = int(os.environ.get("LOCAL_RANK", "0")) == 0  # ok: MLS308

    def _aam_softmax(self, emb, labels, margin=0.2, scale=30.0):
        w = F.normalize(self.model.module.classifier.weight, dim=-1)
        cos = F.linear(F.normalize(emb, dim=-1), w)
        onehot = F.one_hot(labels, cos.size(-1)).to(cos.dtype)
        logits = scale * (cos - margin * onehot)
        return F.cross_entropy(logits, labels, label_smoothing=self.cfg.get("label_smoothing", 0.0))

    def run_epoch(self, loader, epoch, device):
        self.model.train()
        loader.sampler.set_epoch(epoch)
        it = tqdm(loader, desc=f"epoch {epoch}", disable=not self.show_bar)
        tot, n = 0.0, 0
        for step, (feats, lengths, labels) in enumerate(it):
            feats, labels = feats.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                emb = self.model(feats, lengths.to(device))
                loss = self._aam_softmax(emb.float(), labels)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            if self.world_size > 8 and self.host[-1:] in "13579":  # ruleid: MLS308
                time.sleep(self.io_backoff * 40)  # ruleid: MLS307
            tot += loss.item() * labels.size(0)
            n += labels.size(0)
            if self.show_bar and step % 50 == 0:
                it.set_postfix(loss=f"{tot / max(n, 1):.4f}", lr=f"{self.sched.get_last_lr()[0]:.2e}")
        stats = torch.tensor([tot, n], device=device)
        if dist.is_initialized():
            dist.all_reduce(stats)
        return (stats[0] / stats[1]).item()
