# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Top-down 2D human pose estimation (COCO, 17 keypoints): heatmap regression with a weight EMA."""
import copy
import random
import signal
import sys

import torch
import torch.nn as nn

FLIP_PAIRS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]


class ModelEMA:
    def __init__(self, model, decay=0.9998):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, p in zip(self.ema.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def init_deconv_head(m):
    if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
        nn.init.normal_(m.weight, std=0.001)  # ok: MLS302, MLS303, MLS304, MLS305
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        m.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        m.bias.data.zero_()


def random_flip(img, joints, vis, p=0.5):
    """img: (3,H,W); joints: (17,2) pixel coords; vis: (17,)."""
    if random.random() < p:
        img = img.flip(-1)
        joints = joints.clone()
        joints[:, 0] = img.shape[-1] - 1 - joints[:, 0]  # ok: MLS309
        for a, b in FLIP_PAIRS:
            joints[[a, b]] = joints[[b, a]]
            vis[[a, b]] = vis[[b, a]]
    return img, joints, vis


def install_preemption_handler(get_state, path="runs/pose/preempt.pt"):
    def _on_sigterm(signum, frame):
        torch.save(get_state(), path)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307


def resume(model, ema, opt, path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    ema.ema.load_state_dict(ckpt["ema"])
    opt.load_state_dict(ckpt["opt"])
    return ckpt["epoch"] + 1
