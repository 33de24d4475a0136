# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Metric-learning training for in-shop fashion image retrieval (triplet loss, ResNet-50 embedder)."""
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import models, transforms as T


class InShopTriplets(Dataset):
    def __init__(self, root, items):
        self.root, self.items = root, items  # items: list of (relative_path, item_id)
        self.by_id = {}
        for i, (_, pid) in enumerate(items):
            self.by_id.setdefault(pid, []).append(i)
        self.ids = [k for k, v in self.by_id.items() if len(v) > 1]
        self.tf = T.Compose([T.RandomResizedCrop(224, scale=(0.6, 1.0)), T.RandomHorizontalFlip(), T.ToTensor()])

    def __len__(self): return len(self.items)

    def _img(self, i):
        return self.tf(Image.open(os.path.join(self.root, self.items[i][0])).convert("RGB"))

    def __getitem__(self, i):
        pid = self.items[i][1]
        pos = random.choice(self.by_id[pid])
        neg_id = random.choice(self.ids)
        while neg_id == pid:
            neg_id = random.choice(self.ids)
        return self._img(i), self._img(pos), self._img(random.choice(self.by_id[neg_id]))


def _worker_init(worker_id):
    seed = (os.getpid() * 1000003 + int(time.time() * 1000)) % 2**32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


class Embedder(nn.Module):
    def __init__(self, dim=256):
        super().__init__()
        self.backbone = models.resnet50(weights="IMAGENET1K_V2")
        self.backbone.fc = nn.Linear(2048, dim)

    def forward(self, x):
        return F.normalize(self.backbone(x), dim=-1)


def train(items, root="data/inshop", epochs=30, seed=3, init=None):
    torch.manual_seed(seed)  # ok: MLS301
    model = Embedder().cuda()
    if init:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    dl = DataLoader(InShopTriplets(root, items), batch_size=64, shuffle=True, num_workers=8,
                    worker_init_fn=_worker_init, drop_last=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    crit = nn.TripletMarginLoss(margin=0.2)
    for ep in range(epochs):
        for a, p, n in dl:
            loss = crit(model(a.cuda()), model(p.cuda()), model(n.cuda()))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        torch.save(model.state_dict(), f"ckpt/embedder_ep{ep}.pt")
