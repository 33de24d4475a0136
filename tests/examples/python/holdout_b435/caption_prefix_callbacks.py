# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""Callbacks for prefix-tuning a captioner: frozen ViT + frozen LLM, trainable Q-Former/projector."""
import copy
import logging

import torch

log = logging.getLogger("captioner")


class ProjectorEMA:
    """Exponential moving average of the trainable projector, used for evaluation."""

    def __init__(self, projector: torch.nn.Module, decay: float = 0.9995):
        self.decay = decay
        self.shadow = copy.deepcopy(projector).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, projector: torch.nn.Module):
        for s, p in zip(self.shadow.parameters(), projector.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class AdamWarmRestart:
    """Resets second-moment statistics when the LLM prompt template changes between stages."""

    def __init__(self, optimizer: torch.optim.Optimizer, restart_steps=(2000, 6000)):
        self.optimizer = optimizer
        self.restart_steps = set(restart_steps)

    def on_step_end(self, step: int):
        if step in self.restart_steps or step % 500 == 0:
            for state in self.optimizer.state.values():
                if "exp_avg_sq" in state:
                    state["exp_avg_sq"].zero_()  # ruleid: MLS304
            log.info("step %d: reset adam second moments", step)


class CaptionTrainerHooks:
    def __init__(self, model, optimizer, ema_decay=0.9995):
        self.model = model
        self.ema = ProjectorEMA(model.projector, ema_decay)
        self.restart = AdamWarmRestart(optimizer)

    def after_optimizer_step(self, step: int):
        self.ema.update(self.model.projector)
        self.restart.on_step_end(step)
