# ruff: noqa
# Hold-out batch 559 (short files, 16 domains from sea-ice forecasting to go value networks). Measured once in session 25 (round 149): 14/17 (82%) at medium+.
"""Grasp success predictor: RGB crop + candidate gripper pose -> P(success)."""
import copy

import torch
import torch.nn as nn
import torchvision


class GraspSuccessNet(nn.Module):
    def __init__(self, action_dim=7, hidden=256, sim2real_lambda=0.1):
        super().__init__()
        trunk = torchvision.models.resnet18(weights=None)
        trunk.fc = nn.Identity()
        self.rgb_encoder = trunk
        self.action_mlp = nn.Sequential(
            nn.Linear(action_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden))
        self.fuse = nn.Sequential(nn.Linear(512 + hidden, hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden, 1)
        self.domain_head = nn.Linear(hidden, 2)
        self.sim2real_lambda = sim2real_lambda

    def forward(self, rgb, action):
        z = torch.cat([self.rgb_encoder(rgb), self.action_mlp(action)], dim=-1)
        fused = self.fuse(z)
        if self.training and fused.requires_grad:
            fused.register_hook(lambda g: -self.sim2real_lambda * g)  # ruleid: MLS303
        return self.head(fused).squeeze(-1), self.domain_head(fused)


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


def train_step(model, ema, batch, optimizer, domain_weight=0.1):
    rgb, action, success, domain = batch
    logit, dom_logit = model(rgb, action)
    loss = nn.functional.binary_cross_entropy_with_logits(logit, success.float())
    loss = loss + domain_weight * nn.functional.cross_entropy(dom_logit, domain)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    ema.update(model)
    return loss.item()
