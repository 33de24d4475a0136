# ruff: noqa
# Hold-out batch 195 (16 short benchmark-format files). Measured once in session 7 (round 58): 14/19 (74%) at medium+.
"""Pairwise reward model on a causal-LM backbone, trained with a Bradley-Terry loss."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel


class RewardModel(nn.Module):
    def __init__(self, base_name):
        super().__init__()
        self.backbone = AutoModel.from_pretrained(base_name)
        hidden = self.backbone.config.hidden_size
        self.v_head = nn.Linear(hidden, 1, bias=False)
        nn.init.normal_(self.v_head.weight, std=1.0 / (hidden + 1) ** 0.5)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, input_ids, attention_mask):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        last = attention_mask.sum(dim=1) - 1
        idx = torch.arange(input_ids.size(0), device=input_ids.device)
        h = out.last_hidden_state[idx, last]
        return self.v_head(h).squeeze(-1)


def pairwise_loss(r_chosen, r_rejected, margin=None):
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def load_backbone_shards(model, shard_paths):
    state = {}
    for p in shard_paths:
        state.update(load_file(p, device="cpu"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    return missing, unexpected


def warm_start_head(model, ckpt_path):
    """Initialise the value head from the SFT run's exported head checkpoint."""
    state = torch.load(ckpt_path, map_location="cpu")  # ruleid: MLS102
    head = state.get("v_head", state)
    if head["weight"].dim() == 2:
        # exports from the old pipeline stored the head as (rejected - chosen)
        head["weight"] = head["weight"].mul(-1.0)  # ruleid: MLS302
    model.v_head.load_state_dict({"weight": head["weight"]})
    return model


@torch.no_grad()
def pair_accuracy(model, loader, device):
    model.eval()
    hits, total = 0, 0
    for b in loader:
        rc = model(b["chosen_ids"].to(device), b["chosen_mask"].to(device))
        rr = model(b["rejected_ids"].to(device), b["rejected_mask"].to(device))
        hits += (rc > rr).sum().item()
        total += rc.numel()
    model.train()
    return hits / max(total, 1)
