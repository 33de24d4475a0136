# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""Grasp-quality network: predicts success probability of a planar grasp from a
depth crop centred on the grasp point plus the gripper depth/angle."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class GraspQualityNet(nn.Module):
    def __init__(self, crop=32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        )
        self.pose_fc = nn.Linear(2, 16)
        self.head = nn.Sequential(nn.Linear(64 * (crop // 4) ** 2 + 16, 256), nn.ReLU(), nn.Linear(256, 1))
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)

    def forward(self, depth, pose):
        feat = self.encoder(depth)
        if self.training and feat.requires_grad:
            feat.register_hook(lambda g: g.mul(0.02))  # ruleid: MLS303
        z = torch.cat([feat.flatten(1), F.relu(self.pose_fc(pose))], dim=1)
        return self.head(z).squeeze(-1)


def train_epoch(model, loader, opt, scaler, device, max_norm=5.0):
    model.train()
    total = 0.0
    for depth, pose, success in loader:
        depth, pose, success = depth.to(device), pose.to(device), success.float().to(device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            loss = F.binary_cross_entropy_with_logits(model(depth, pose), success)
        scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        total += loss.item() * depth.size(0)
    return total / len(loader.dataset)


@torch.no_grad()
def evaluate(model, loader, device, thresh=0.5):
    model.eval()
    tp = fp = fn = 0
    for depth, pose, success in loader:
        pred = torch.sigmoid(model(depth.to(device), pose.to(device))) > thresh
        success = success.to(device).bool()
        tp += (pred & success).sum().item()
        fp += (pred & ~success).sum().item()
        fn += (~pred & success).sum().item()
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {"precision": precision, "recall": recall}
