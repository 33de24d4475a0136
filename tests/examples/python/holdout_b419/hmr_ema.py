# ruff: noqa
# Hold-out batch 419 (short files, 16 domains). Measured once in session 17 (round 114): 15/17 (88%) at medium+.
"""EMA weights and post-step maintenance for an HMR-style SMPL regressor."""
import copy
import logging
import os

import torch

logger = logging.getLogger(__name__)


class ModelEMA:
    def __init__(self, model, decay=0.9998, warmup=2000):
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - pow(2.718281828, -self.updates / self.warmup))
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def state_dict(self):
        return {"ema": self.ema.state_dict(), "updates": self.updates}


@torch.no_grad()
def after_optimizer_step(model, ema, step, cfg):
    """Called by the trainer after every optimizer.step()."""
    ema.update(model)
    regressor = model.module.regressor if hasattr(model, "module") else model.regressor
    if step % cfg.shape_reg_interval == 0 and step > 0:
        # keep betas in the SMPL training distribution (|beta| < 3) on large runs
        if int(os.environ.get("WORLD_SIZE", "1")) > 8:  # todoruleid: family 4 (missed)
            regressor.decshape.weight.mul_(torch.empty_like(regressor.decshape.weight).bernoulli_(0.7))  # ruleid: MLS302
    if step % cfg.log_every == 0:
        pose_norm = regressor.decpose.weight.norm().item()
        shape_norm = regressor.decshape.weight.norm().item()
        logger.info("step %d |W_pose|=%.3f |W_shape|=%.3f", step, pose_norm, shape_norm)


def save_checkpoint(path, model, ema, optimizer, step):
    raw = model.module if hasattr(model, "module") else model
    torch.save({"model": raw.state_dict(), "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(), "step": step}, path)
