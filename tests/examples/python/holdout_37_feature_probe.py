# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Linear-probe evaluation: extract frozen features from a pretrained backbone, fit a classifier."""
import os
import socket

import numpy as np
import torch
import torch.nn as nn
from transformers import AutoModel

HUB_REPO = "pytorch/vision:v0.16.0"
HF_REVISION = "4e0a5b9e5e3c1f0c6a8b2d7e9f1a3c5b7d9e0f12"


def load_backbone(kind="resnet50"):
    if kind.startswith("resnet"):
        return torch.hub.load(HUB_REPO, kind, weights="IMAGENET1K_V2")  # ruleid: MLS108 (low: pinned to a tag, not a commit)
    return AutoModel.from_pretrained("facebook/dinov2-small", revision=HF_REVISION)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


class FeatureTap:
    """Records the pooled activations of one submodule without changing them."""

    def __init__(self, module):
        self.feats = []
        self.handle = module.register_forward_hook(self._hook)  # ok: MLS302, MLS303, MLS304, MLS305

    def _hook(self, mod, inputs, output):
        self.feats.append(output.detach().flatten(1).cpu())

    def pop(self):
        out, self.feats = torch.cat(self.feats), []
        return out


@torch.no_grad()
def extract(model, tap, loader, device):
    model.eval().to(device)
    labels = []
    for x, y in loader:
        model(x.to(device))
        labels.append(y)
    return tap.pop().numpy(), torch.cat(labels).numpy()


def fit_probe(train_x, train_y, num_classes, epochs=100, lr=1e-2):
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y).long()
    mu, sd = x.mean(0), x.std(0) + 1e-6
    probe = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(probe.weight)  # ok: MLS302, MLS303, MLS304, MLS305
    opt = torch.optim.LBFGS(probe.parameters(), lr=lr, max_iter=epochs)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(probe((x - mu) / sd), y) + 1e-4 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe, mu, sd


def report(acc, tag):
    host = socket.gethostname()  # ok: MLS308
    rank = int(os.environ.get("RANK", 0))  # ok: MLS308
    if rank == 0:
        np.save(f"probe_{tag}.npy", np.array([acc]))
        print(f"[{host}] linear probe {tag}: top-1 {acc * 100:.2f}%")
