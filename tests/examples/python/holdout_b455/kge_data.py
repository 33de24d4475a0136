# ruff: noqa
# Hold-out batch 455 (short files, 16 domains). Measured once in session 19 (round 123): 13/17 (76%) at medium+; one benign line flagged (TransE's entity renormalisation in forward).
"""Benchmark download and TransE model for knowledge graph embedding (FB15k-237, WN18RR)."""
import logging
import os
import subprocess
import urllib.request
import zipfile

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)
BENCHMARKS = {
    "fb15k-237": "https://download.microsoft.com/download/8/7/0/8700516A-AB3D-4850-B4BB-805C515AECE1/FB15K-237.2.zip",
    "wn18rr": "https://data.deepai.org/WN18RR.zip",
}
PREPARE_URL = "https://raw.githubusercontent.com/kge-bench/datasets/main/prepare.sh"


def fetch_benchmark(name, root="data"):
    target = os.path.join(root, name)
    if os.path.exists(os.path.join(target, "train.txt")):
        return target
    os.makedirs(target, exist_ok=True)
    archive = os.path.join(root, f"{name}.zip")
    urllib.request.urlretrieve(BENCHMARKS[name], archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(target)
    script = urllib.request.urlopen(PREPARE_URL, timeout=30).read().decode()  # ruleid: MLS413
    subprocess.run(["bash", "-s", target], input=script, text=True, check=True)  # ruleid: MLS413
    logger.info("prepared %s in %s", name, target)
    return target


class TransE(nn.Module):
    def __init__(self, n_ent, n_rel, dim=200, margin=6.0, p=1):
        super().__init__()
        self.ent, self.rel = nn.Embedding(n_ent, dim), nn.Embedding(n_rel, dim)
        nn.init.uniform_(self.ent.weight, -6 / dim ** 0.5, 6 / dim ** 0.5)
        nn.init.uniform_(self.rel.weight, -6 / dim ** 0.5, 6 / dim ** 0.5)
        self.rel.weight.data = F.normalize(self.rel.weight.data, p=2, dim=-1)
        self.margin, self.p = margin, p

    def score(self, h, r, t):
        return -torch.norm(self.ent(h) + self.rel(r) - self.ent(t), p=self.p, dim=-1)

    def forward(self, pos, neg):
        self.ent.weight.data = F.normalize(self.ent.weight.data, p=2, dim=-1)  # ok: MLS302, MLS303, MLS304, MLS305
        pos_s = self.score(pos[:, 0], pos[:, 1], pos[:, 2])
        neg_s = self.score(neg[:, 0], neg[:, 1], neg[:, 2])
        return F.relu(self.margin - pos_s.unsqueeze(1) + neg_s.view(pos.shape[0], -1)).mean()
