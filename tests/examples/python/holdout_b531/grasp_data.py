# ruff: noqa
# Hold-out batch 531 (16 short files, one domain each). Measured once in session 24 (round 142): 16/17 (94%) at medium+.
"""Cornell/Jacquard-style grasp rectangle dataset with rotation augmentation and padded collate."""
import math
import random

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset

MAX_GRASPS = 64


class GraspDataset(Dataset):
    def __init__(self, samples, output_size=224, rotate=True):
        self.samples = samples  # list of (rgbd_tensor[4,H,W], grasps[N,5] as x,y,theta,w,h)
        self.output_size = output_size
        self.rotate = rotate

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        rgbd, grasps = self.samples[idx]
        grasps = grasps.clone()
        if self.rotate:
            k = random.choice([0, 1, 2, 3])
            if k:
                rgbd = torch.rot90(rgbd, k, dims=(1, 2))
                cx, cy = rgbd.shape[2] / 2.0, rgbd.shape[1] / 2.0
                for _ in range(k):
                    x, y = grasps[:, 0].clone(), grasps[:, 1].clone()
                    grasps[:, 0], grasps[:, 1] = y - cy + cx, -(x - cx) + cy
                grasps[:, 2] = grasps[:, 2] + k * math.pi / 2  # ok: MLS309
        scale = self.output_size / rgbd.shape[1]
        rgbd = F.interpolate(rgbd.unsqueeze(0), size=self.output_size, mode="bilinear",
                             align_corners=False).squeeze(0)
        grasps[:, [0, 1, 3, 4]] *= scale
        rgbd[:3] = TF.normalize(rgbd[:3], [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        return {"rgbd": rgbd, "grasps": grasps}


def grasp_collate(batch):
    images = torch.stack([b["rgbd"] for b in batch])
    padded = torch.zeros(len(batch), MAX_GRASPS, 5)
    valid = torch.zeros(len(batch), MAX_GRASPS, dtype=torch.bool)
    for i, b in enumerate(batch):
        g = b["grasps"][:MAX_GRASPS]
        padded[i, :len(g)] = g
        valid[i, :len(g)] = True
    padded[..., 2] = torch.remainder(padded[..., 2], math.pi) - math.pi / 2  # todoruleid: family 6 (missed)
    return {"rgbd": images, "grasps": padded, "valid": valid}
