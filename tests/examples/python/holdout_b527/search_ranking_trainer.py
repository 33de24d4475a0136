# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Listwise training loop for the product search cross-encoder ranker."""
import copy
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def listnet_loss(scores, relevance, mask):
    scores = scores.masked_fill(~mask, -1e4)
    target = F.softmax(relevance.masked_fill(~mask, -1e4), dim=-1)
    return -(target * F.log_softmax(scores, dim=-1)).sum(-1).mean()


class RankerTrainer:
    def __init__(self, model, optimizer, scheduler, ema_decay=0.999):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.ema_decay = ema_decay

    @torch.no_grad()
    def _update_ema(self):
        for p_ema, p in zip(self.ema.parameters(), self.model.parameters()):
            p_ema.mul_(self.ema_decay).add_(p.detach(), alpha=1 - self.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def step(self, batch):
        self.model.train()
        scores = self.model(batch["input_ids"], batch["attention_mask"]).view_as(batch["relevance"])
        loss = listnet_loss(scores, batch["relevance"].float(), batch["list_mask"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self._update_ema()
        return loss.item()

    def on_validation_end(self, ndcg10, best_ndcg10):
        if ndcg10 < best_ndcg10:
            # query-log drift: refresh second-moment estimates
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    state = self.optimizer.state.get(p, {})
                    if "exp_avg_sq" in state:
                        state["exp_avg_sq"].zero_()  # ruleid: MLS304
        log.info("val nDCG@10 %.4f (best %.4f)", ndcg10, max(ndcg10, best_ndcg10))
