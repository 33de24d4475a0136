# ruff: noqa
# Hold-out batch 535 (16 short files, one domain each). Measured once in session 24 (round 143): 14/17 (82%) at medium+.
"""Training utilities for single-view mesh reconstruction (template deformation)."""
import copy
import functools

import torch
import torch.nn.functional as F


def chamfer(a, b):
    d = torch.cdist(a, b)
    return d.min(dim=2).values.mean() + d.min(dim=1).values.mean()


def laplacian_loss(verts, lap):
    # lap: sparse (V, V) uniform Laplacian of the template mesh
    return torch.stack([torch.sparse.mm(lap, v).norm(dim=-1).mean() for v in verts]).mean()


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, p in zip(self.ema.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def _step_with_refresh(opt, base_step, closure=None):
    out = base_step(closure)
    with torch.no_grad():
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.dim() > 1:
                    p.add_(torch.randn_like(p) * p.detach().std() * 0.05)  # ruleid: MLS302
    return out


def build_optimizer(model, lr=1e-4, weight_decay=1e-5):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    opt.step = functools.partial(_step_with_refresh, opt, opt.step)  # ruleid: MLS305
    return opt


def train_step(model, ema, opt, batch, lap, w_lap=0.1, w_edge=0.05):
    images, gt_points = batch["image"].cuda(), batch["points"].cuda()
    verts, edges = model(images)
    pred_pts = verts  # (B, V, 3)
    loss_cd = chamfer(pred_pts, gt_points)
    loss_lap = laplacian_loss(verts, lap)
    edge_len = (verts[:, edges[:, 0]] - verts[:, edges[:, 1]]).norm(dim=-1)
    loss_edge = F.mse_loss(edge_len, edge_len.mean(dim=1, keepdim=True).expand_as(edge_len))
    loss = loss_cd + w_lap * loss_lap + w_edge * loss_edge
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    ema.update(model)
    return {"chamfer": loss_cd.item(), "lap": loss_lap.item(), "edge": loss_edge.item()}
