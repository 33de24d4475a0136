# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""3D shape classification on ModelNet40 point clouds with PointNet and an EMA of the weights."""
import copy
import glob

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


class ModelNetNpy(Dataset):
    def __init__(self, root, split="train", n_points=1024):
        self.files = sorted(glob.glob(f"{root}/{split}/*.npz"))
        self.train, self.n = split == "train", n_points

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        d = np.load(self.files[i])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        pts, label = d["points"][: self.n].astype(np.float32), int(d["label"])
        if self.train:
            theta = np.random.uniform(0, 2 * np.pi)  # ok: MLS309
            rot = np.array([[np.cos(theta), 0, np.sin(theta)], [0, 1, 0], [-np.sin(theta), 0, np.cos(theta)]])
            pts = pts @ rot.T.astype(np.float32) + np.random.normal(0, 0.01, pts.shape).astype(np.float32)
        return torch.from_numpy(pts).T, label


class PointNet(nn.Module):
    def __init__(self, k=40):
        super().__init__()
        self.feat = nn.Sequential(nn.Conv1d(3, 64, 1), nn.BatchNorm1d(64), nn.ReLU(),
                                  nn.Conv1d(64, 128, 1), nn.BatchNorm1d(128), nn.ReLU(),
                                  nn.Conv1d(128, 1024, 1), nn.BatchNorm1d(1024), nn.ReLU())
        self.cls = nn.Sequential(nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(0.3), nn.Linear(512, k))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        return self.cls(self.feat(x).max(dim=2).values)


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def seed_worker(worker_id):
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


def train(root="data/modelnet40", epochs=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    dl = DataLoader(ModelNetNpy(root), batch_size=32, shuffle=True, num_workers=8, drop_last=True,
                    worker_init_fn=seed_worker, generator=g)
    model = PointNet().cuda()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for epoch in range(epochs):
        for pts, y in dl:
            loss = nn.functional.cross_entropy(model(pts.cuda()), y.cuda(), label_smoothing=0.2)
            opt.zero_grad(); loss.backward(); opt.step()
            ema_update(ema, model)
    torch.save(ema.state_dict(), "pointnet_ema.pt")
