# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""Resume / EMA utilities for the point-cloud shape completion trainer (PCN-style)."""
import copy
import logging

import torch

log = logging.getLogger(__name__)


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.ema.buffers(), model.buffers()):
            ema_b.copy_(b)


def resume(path, model, optimizer, ema=None, world_size=1):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ema is not None and "ema" in ckpt:
        ema.ema.load_state_dict(ckpt["ema"])
    saved_ws = ckpt.get("world_size", world_size)
    if saved_ws != world_size:
        log.info("world size changed %d -> %d, resetting adaptive moments", saved_ws, world_size)
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].zero_()  # ruleid: MLS304
    start_epoch = ckpt.get("epoch", -1) + 1
    log.info("resumed from %s at epoch %d (best CD %.5f)", path, start_epoch, ckpt.get("best_cd", float("nan")))
    return start_epoch, ckpt.get("best_cd", float("inf"))


def save(path, model, optimizer, epoch, best_cd, ema=None, world_size=1):
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": epoch, "best_cd": best_cd, "world_size": world_size}
    if ema is not None:
        state["ema"] = ema.ema.state_dict()
    torch.save(state, path)
