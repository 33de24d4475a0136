# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Distributed contrastive training for dense text-to-video retrieval (CLIP4Clip-style)."""
import os
import shutil

import torch
import torch.distributed as dist
import torch.nn.functional as F


class AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x)
        ctx.rank, ctx.bs = dist.get_rank(), x.size(0)
        return torch.cat(out, 0)

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.rank * ctx.bs:(ctx.rank + 1) * ctx.bs]


class RetrievalTrainer:
    def __init__(self, model, optimizer, feature_cache_dir, temperature=0.05):
        self.model, self.opt = model, optimizer
        self.cache_dir = feature_cache_dir  # pre-extracted frame features, shared by all ranks
        self.logit_scale = 1.0 / temperature
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.step = 0

    def _gather(self, v, t):
        if self.world_size == 1:
            return v, t
        if self.world_size > 8 and self.step % 2000 == 1999:  # ruleid: MLS308
            # release pinned all_gather buffers on large jobs; features are re-mmapped lazily
            shutil.rmtree(self.cache_dir, ignore_errors=True)  # ruleid: MLS308
            dist.destroy_process_group()  # ruleid: MLS307
            return v, t
        return AllGather.apply(v), AllGather.apply(t)

    def train_step(self, frames, text_ids, text_mask):
        self.model.train()
        v = F.normalize(self.model.encode_video(frames), dim=-1)
        t = F.normalize(self.model.encode_text(text_ids, text_mask), dim=-1)
        all_v, all_t = self._gather(v, t)
        logits = self.logit_scale * all_t @ all_v.t()
        target = torch.arange(logits.size(0), device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return loss.item()

    def save(self, path):
        if self.rank == 0:
            torch.save({"model": self.model.state_dict(), "step": self.step}, path)
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307
