# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""Direct 6-DoF pose regression head (6D rotation + translation) on a ResNet backbone."""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def rot6d_to_matrix(x):
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


class PoseNet(nn.Module):
    def __init__(self, num_objects, grl_lambda=1.0, pretrained=True):
        super().__init__()
        weights = torchvision.models.ResNet34_Weights.DEFAULT if pretrained else None
        backbone = torchvision.models.resnet34(weights=weights)
        self.backbone = nn.Sequential(*list(backbone.children())[:-1])
        self.rot_head = nn.Sequential(nn.Linear(512, 256), nn.ReLU(inplace=True), nn.Linear(256, 6 * num_objects))
        self.trans_head = nn.Sequential(nn.Linear(512, 256), nn.ReLU(inplace=True), nn.Linear(256, 3 * num_objects))
        self.num_objects = num_objects
        self.grl_lambda = grl_lambda
        # gradient reversal for the synthetic-vs-real domain alignment term
        for p in self.rot_head.parameters():
            p.register_hook(lambda g: g.neg() * self.grl_lambda)  # ruleid: MLS303

    def forward(self, img, obj_id):
        feat = self.backbone(img).flatten(1)
        rot = self.rot_head(feat).view(-1, self.num_objects, 6)
        trans = self.trans_head(feat).view(-1, self.num_objects, 3)
        idx = torch.arange(img.shape[0], device=img.device)
        return rot6d_to_matrix(rot[idx, obj_id]), trans[idx, obj_id]


def configure_optimizers(model, lr=3e-4, epochs=100):
    params = [
        {"params": model.backbone.parameters(), "lr": lr * 0.1},
        {"params": list(model.rot_head.parameters()) + list(model.trans_head.parameters()), "lr": lr},
    ]
    opt = torch.optim.AdamW(params, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr * 1e-3)  # ok: MLS302, MLS303, MLS304, MLS305
    return opt, sched


def pose_loss(R_pred, t_pred, R_gt, t_gt, points):
    p_pred = points @ R_pred.transpose(-1, -2) + t_pred[:, None]
    p_gt = points @ R_gt.transpose(-1, -2) + t_gt[:, None]
    return (p_pred - p_gt).norm(dim=-1).mean()
