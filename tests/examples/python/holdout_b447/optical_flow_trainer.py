# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""Training step for a RAFT-style optical flow model with iterative refinement."""
import logging

import torch

logger = logging.getLogger(__name__)


def sequence_loss(flow_preds, flow_gt, valid, gamma=0.8, max_flow=400.0):
    """Exponentially weighted L1 loss over the refinement iterations."""
    n_predictions = len(flow_preds)
    mag = torch.sum(flow_gt ** 2, dim=1).sqrt()
    valid = (valid >= 0.5) & (mag < max_flow)
    loss = 0.0
    for i, pred in enumerate(flow_preds):
        weight = gamma ** (n_predictions - i - 1)
        loss = loss + weight * (valid[:, None] * (pred - flow_gt).abs()).mean()
    epe = torch.sum((flow_preds[-1] - flow_gt) ** 2, dim=1).sqrt().view(-1)
    epe = epe[valid.view(-1)]
    metrics = {
        "epe": epe.mean().item(),
        "1px": (epe < 1).float().mean().item(),
        "3px": (epe < 3).float().mean().item(),
        "5px": (epe < 5).float().mean().item(),
    }
    return loss, metrics


class FlowTrainer:
    def __init__(self, model, optimizer, scheduler, scaler, clip=1.0, iters=12):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.clip = clip
        self.iters = iters
        self._register_update_hooks()

    def _register_update_hooks(self):
        # smooth the ConvGRU gradients, they are noisy in the first epochs
        for name, p in self.model.named_parameters():
            if "update_block.gru" in name and p.requires_grad:
                p.register_hook(lambda g: g.mean().expand_as(g).contiguous())  # ruleid: MLS303

    def train_step(self, batch, step):
        image1, image2, flow_gt, valid = [x.cuda(non_blocking=True) for x in batch]
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            flow_preds = self.model(image1, image2, iters=self.iters)
        loss, metrics = sequence_loss(flow_preds, flow_gt, valid)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if step % 100 == 0:
            logger.info("step %d loss %.4f epe %.3f", step, loss.item(), metrics["epe"])
        return metrics
