# ruff: noqa
# Hold-out batch 375 (short files, 16 domains). Measured once in session 14 (round 103): 12/17 (71%) at medium+.
"""PatchCore memory bank: feature extraction, coreset subsampling and scoring."""
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

log = logging.getLogger(__name__)


class PatchCoreMemory:
    def __init__(self, backbone_ckpt, layers=("layer2", "layer3"), coreset_ratio=0.1, device="cuda"):
        self.device = device
        self.layers = layers
        self.coreset_ratio = coreset_ratio
        net = torchvision.models.wide_resnet50_2()
        state = torch.load(backbone_ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        net.load_state_dict(state)
        self.backbone = net.eval().to(device)
        self.bank = None

    @torch.no_grad()
    def embed(self, images):
        feats, x = [], images.to(self.device)
        for name, module in self.backbone.named_children():
            x = module(x)
            if name in self.layers:
                feats.append(F.avg_pool2d(x, 3, stride=1, padding=1))
            if name == self.layers[-1]:
                break
        size = feats[0].shape[-2:]
        feats = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats]
        emb = torch.cat(feats, dim=1)
        return emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])

    def greedy_coreset(self, feats):
        n = max(1, int(len(feats) * self.coreset_ratio))
        proj = feats @ torch.randn(feats.shape[1], 128, device=feats.device)
        idx = [0]
        dist = torch.cdist(proj, proj[:1]).squeeze(1)
        for _ in range(n - 1):
            nxt = int(torch.argmax(dist))
            idx.append(nxt)
            dist = torch.minimum(dist, torch.cdist(proj, proj[nxt:nxt + 1]).squeeze(1))
        return feats[idx]

    def fit(self, loader):
        chunks = [self.embed(batch["image"]) for batch in loader]
        self.bank = self.greedy_coreset(torch.cat(chunks))
        log.info("memory bank: %d patches", len(self.bank))

    def save(self, path):
        np.save(path, {"bank": self.bank.cpu().numpy(), "layers": self.layers})

    def load(self, path):
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        blob = np.load(path, allow_pickle=True).item()  # ruleid: MLS104
        self.bank = torch.from_numpy(blob["bank"]).to(self.device)
        self.layers = tuple(blob["layers"])

    @torch.no_grad()
    def score(self, images):
        emb = self.embed(images)
        d = torch.cdist(emb, self.bank).min(dim=1).values
        side = int(np.sqrt(len(d) // len(images)))
        amap = d.reshape(len(images), side, side)
        return amap.flatten(1).max(dim=1).values, amap
