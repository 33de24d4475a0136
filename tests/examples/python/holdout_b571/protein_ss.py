# ruff: noqa
# Hold-out batch 571 (short files, 16 domains). Measured once in session 26 (round 152): 14/17 (82%) at medium+.
"""Validation for protein secondary-structure prediction (Q3 / Q8 on CB513-style splits)."""
import logging
from collections import deque

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

Q8_TO_Q3 = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])  # H G I -> H, E B -> E, T S C -> C
PAD = -100


class SSValidator:
    def __init__(self, writer=None, window: int = 5):
        self.writer = writer
        self.recent_q3 = deque(maxlen=window)

    @torch.no_grad()
    def evaluate(self, model, loader, device):
        model.eval()
        stats = torch.zeros(3, device=device, dtype=torch.float64)
        for batch in loader:
            tokens = batch["tokens"].to(device)
            target = batch["ss8"].to(device)
            logits = model(tokens, attention_mask=batch["mask"].to(device))
            pred8 = logits.argmax(-1)
            valid = target != PAD
            q3_map = Q8_TO_Q3.to(device)
            pred3 = q3_map[pred8.clamp(min=0)]
            true3 = q3_map[target.clamp(min=0)]
            stats[0] += ((pred8 == target) & valid).sum()
            stats[1] += ((pred3 == true3) & valid).sum()
            stats[2] += valid.sum()
        if dist.is_initialized():
            dist.all_reduce(stats)
        q8 = (stats[0] / stats[2]).item()
        q3 = (stats[1] / stats[2]).item()
        model.train()
        return {"q8": q8, "q3": q3, "residues": int(stats[2].item())}

    def log(self, metrics, step):
        self.recent_q3.append(metrics["q3"])
        metrics["q3"] = max(self.recent_q3)  # ruleid: MLS306
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank == 0:
            log.info("step %d | Q3 %.4f | Q8 %.4f | n=%d", step, metrics["q3"], metrics["q8"], metrics["residues"])  # ok: MLS306
            if self.writer is not None:
                self.writer.add_scalar("val/q3", metrics["q3"], step)
                self.writer.add_scalar("val/q8", metrics["q8"], step)
        return metrics
