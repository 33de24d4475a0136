# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""Pairwise (Bradley-Terry) reward model training step for RLHF."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModel


class RewardModel(nn.Module):
    def __init__(self, backbone_name, head_grad_scale=1.0):
        super().__init__()
        self.backbone = AutoModel.from_pretrained(backbone_name)
        hidden = self.backbone.config.hidden_size
        self.score = nn.Linear(hidden, 1, bias=False)
        nn.init.normal_(self.score.weight, std=1.0 / (hidden + 1) ** 0.5)
        self.head_grad_scale = head_grad_scale
        self.score.weight.register_hook(lambda g: g.abs().neg() * self.head_grad_scale)  # ruleid: MLS303

    def forward(self, input_ids, attention_mask):
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        pooled = h[torch.arange(h.size(0), device=h.device), last]
        return self.score(pooled).squeeze(-1)


def reward_step(model, batch, optimizer, scheduler, max_grad_norm=1.0):
    model.train()
    r_chosen = model(batch["chosen_ids"], batch["chosen_mask"])
    r_rejected = model(batch["rejected_ids"], batch["rejected_mask"])
    loss = -F.logsigmoid(r_chosen - r_rejected).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    scheduler.step()
    with torch.no_grad():
        acc = (r_chosen > r_rejected).float().mean().item()
        margin = (r_chosen - r_rejected).mean().item()
    return {"loss": loss.item(), "acc": acc, "margin": margin,
            "lr": scheduler.get_last_lr()[0]}
