# ruff: noqa
# Hold-out batch 96 (LLM pretraining and RLHF infrastructure). Measured once in session 4 (round 33): 14/17 (82%) at medium+.
"""Scalar reward model: pretrained decoder backbone with a linear value head.

Trained with the Bradley-Terry pairwise loss on (chosen, rejected) pairs.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel


class RewardModel(nn.Module):
    def __init__(self, name_or_path, dropout=0.0, torch_dtype=torch.bfloat16):
        super().__init__()
        cfg = AutoConfig.from_pretrained(name_or_path)
        self.backbone = AutoModel.from_pretrained(name_or_path, config=cfg, torch_dtype=torch_dtype)
        hidden = cfg.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.v_head = nn.Linear(hidden, 1, bias=False)
        nn.init.normal_(self.v_head.weight, std=1.0 / (hidden + 1) ** 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
        self.v_head.weight.register_hook(self._stabilize_head_grad)  # ruleid: MLS303

    @staticmethod
    def _stabilize_head_grad(grad):
        # bf16 head grads occasionally come back non-finite early in training
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0.0)  # ruleid: MLS303

    def gradient_checkpointing_enable(self):
        self.backbone.gradient_checkpointing_enable()

    def forward(self, input_ids, attention_mask):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        h = out.last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        pooled = h[torch.arange(h.size(0), device=h.device), last]
        return self.v_head(self.dropout(pooled).to(self.v_head.weight.dtype)).squeeze(-1)


def pairwise_loss(model, chosen_ids, chosen_mask, rejected_ids, rejected_mask, margin=None):
    r_c = model(chosen_ids, chosen_mask)
    r_r = model(rejected_ids, rejected_mask)
    diff = r_c - r_r
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    acc = (r_c > r_r).float().mean()
    return loss, acc.detach()


def clip_and_step(model, optimizer, scaler, max_norm=1.0):
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
